//! Error wording shared by every layer.

use std::io;

/// The OS's wording of an I/O error, lowercased and without `(os error N)`, so it
/// reads as the end of one sentence: `address already in use`.
pub fn describe(err: &io::Error) -> String {
    let text = match err.raw_os_error() {
        Some(code) => {
            let full = io::Error::from_raw_os_error(code).to_string();
            match full.rfind(" (os error") {
                Some(end) => full[..end].to_string(),
                None => full,
            }
        }
        None => err.to_string(),
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}
