//! A wasi:cli component for tests and the demo: prints its arguments and `GREETING`,
//! writes one line to stderr, and exits with the code in `EXIT_CODE` (default 0).

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let greeting = std::env::var("GREETING").unwrap_or_else(|_| "(unset)".to_string());
    println!("hello from a WebAssembly component");
    println!("args: {}", args.join(" "));
    println!("GREETING={greeting}");
    eprintln!("hello-cli: this line goes to stderr");

    // std's exit (WASI 0.2's `exit`) carries only success or failure; `exit-with-code` (WASI 0.2.12)
    // carries the code itself, as a process would.
    match std::env::var("EXIT_CODE").ok().map(|v| v.parse::<u8>()) {
        None | Some(Ok(0)) => ExitCode::SUCCESS,
        Some(Ok(code)) => {
            let _ = std::io::stdout().flush();
            wasip2::cli::exit::exit_with_code(code);
            ExitCode::from(code)
        }
        Some(Err(_)) => {
            eprintln!("hello-cli: EXIT_CODE must be a number from 0 to 255");
            ExitCode::from(2)
        }
    }
}
