//! The "raw ceiling" for BENCHMARKS.md: a TCP reader that only reads and counts
//! newlines, with no framing, formatting or output. One thread per connection,
//! blocking reads of 256 KiB: the least work a server can do per byte. It closes each
//! connection at end of stream, so a sender that half-closes and waits for EOF knows
//! everything it sent was read. It runs until killed.
//!
//! `raw_ceiling [-l ADDR]`; prints `listening tcp ADDR` on stderr.

use std::io::Read;
use std::net::TcpListener;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut listen = "127.0.0.1:8080".to_string();
    while let Some(arg) = args.next() {
        if arg == "-l" || arg == "--listen" {
            listen = args.next().unwrap_or_default();
        }
    }
    let listener = TcpListener::bind(&listen)?;
    eprintln!("listening tcp {}", listener.local_addr()?);
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            let mut lines = 0u64;
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
            }
            std::hint::black_box(lines);
        });
    }
    Ok(())
}
