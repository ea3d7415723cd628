//! The `cnnsplitter` command line: a thin layer over the library.

mod cli;

fn main() {
    restore_sigpipe();
    if let Err(e) = cli::run() {
        // Names from files and the command line may hold control characters (an escape sequence
        // would reach the terminal): they are shown escaped, line by line.
        let message = format!("{e:#}");
        let lines: Vec<String> = message.lines().map(cnnsplitter::error::printable).collect();
        eprintln!("error: {}", lines.join("\n"));
        std::process::exit(1);
    }
}

/// A closed standard output (`cnnsplitter inspect simcnn | head -1`) ends the command the way it
/// ends other Unix tools: by SIGPIPE (status 141 in a shell), never a panic. Rust starts programs
/// with SIGPIPE ignored, which turns the closed pipe into an error that `println!` panics on.
#[cfg(unix)]
fn restore_sigpipe() {
    // SAFETY: setting a signal's action to its default at start-up, before any other thread runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn restore_sigpipe() {}
