//! The interactive session, when standard input and output are a terminal: a
//! prompt with line editing and history (rustyline), the server's replies printed
//! above the prompt without disturbing the line being typed (rustyline's
//! `ExternalPrinter`). Ctrl-D (or typing `!Disconnect`) ends the session cleanly;
//! Ctrl-C leaves at once; a lost connection is reported in one line (exit 1).
//!
//! A lost connection is seen by the reply thread while the main thread waits in
//! `readline`. The reply thread wakes it by raising SIGINT on itself: rustyline's
//! handler turns that into `Interrupted` on the main thread, which restores the
//! terminal; the main thread then finds the loss recorded and reports it.

use std::io;
use std::sync::{Arc, Mutex};

use rustyline::error::ReadlineError;
use rustyline::{Config as EditorConfig, DefaultEditor, ExternalPrinter};

use crate::frame::DISCONNECT;

use super::session::{Replies, Session};
use super::{ClientError, Config};

const PROMPT: &str = "> ";

/// Runs the interactive session. `Ok(None)`: the terminal does not support line
/// editing; the caller falls back to reading lines.
pub fn run(config: &Config) -> Result<Option<()>, ClientError> {
    let editor_config = EditorConfig::builder()
        .auto_add_history(true)
        // Pasted lines are sent one by one, as typed ones are.
        .bracketed_paste(false)
        .build();
    let Ok(mut editor) = DefaultEditor::with_config(editor_config) else {
        return Ok(None);
    };
    let Ok(printer) = editor.create_external_printer() else {
        return Ok(None);
    };
    let printer = Arc::new(Mutex::new(printer));
    let lost: Arc<Mutex<Option<io::Error>>> = Arc::new(Mutex::new(None));
    let replies = {
        let print_to = Arc::clone(&printer);
        let end_to = Arc::clone(&printer);
        let lost = Arc::clone(&lost);
        Replies {
            print: Box::new(move |lines| {
                let text = String::from_utf8_lossy(lines).into_owned();
                if let Ok(mut p) = print_to.lock() {
                    let _ = p.print(text);
                }
            }),
            ended: Box::new(move |err, expected| {
                if expected {
                    return;
                }
                let err = err.unwrap_or_else(|| {
                    io::Error::new(io::ErrorKind::UnexpectedEof, "closed by the server")
                });
                if let Ok(mut slot) = lost.lock() {
                    *slot = Some(err);
                }
                if let Ok(mut p) = end_to.lock() {
                    // Each print waits until the one before has been taken by the
                    // editor (a one-slot channel): once this returns, every reply
                    // has reached the screen, and this empty one never will.
                    let _ = p.print(String::new());
                }
                // SAFETY: raise() sends SIGINT to this thread only; rustyline has a
                // handler installed for the editor's lifetime (it writes to a pipe
                // that `readline` watches), so the process is not ended by it.
                unsafe {
                    libc::raise(libc::SIGINT);
                }
            }),
        }
    };
    let mut session = Session::open_with(config, replies)?;
    let broken = |source| ClientError::Broken {
        server: config.server.clone(),
        source,
    };
    let take_lost = || lost.lock().ok().and_then(|mut slot| slot.take());
    loop {
        match editor.readline(PROMPT) {
            Ok(line) => {
                if line.as_bytes() == DISCONNECT {
                    break;
                }
                let sent = session
                    .send_message(line.as_bytes())
                    .and_then(|()| session.flush());
                if let Err(err) = sent {
                    return Err(broken(take_lost().unwrap_or(err)));
                }
            }
            Err(ReadlineError::Eof) => break,
            Err(ReadlineError::Interrupted) => {
                return Err(match take_lost() {
                    Some(err) => broken(err),
                    None => ClientError::Interrupted,
                });
            }
            Err(ReadlineError::Io(err)) => {
                return Err(ClientError::Input {
                    what: "the terminal".into(),
                    source: err,
                });
            }
            Err(err) => {
                return Err(ClientError::Input {
                    what: "the terminal".into(),
                    source: io::Error::other(err.to_string()),
                });
            }
        }
    }
    drop(editor);
    session.finish(config.wait).map_err(broken)?;
    Ok(Some(()))
}
