//! A wasi:cli component for tests and the demo: prints its arguments and `GREETING`,
//! writes one line to stderr, and exits with the code in `EXIT_CODE` (default 0).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let greeting = std::env::var("GREETING").unwrap_or_else(|_| "(unset)".to_string());
    println!("hello from a WebAssembly component");
    println!("args: {}", args.join(" "));
    println!("GREETING={greeting}");
    eprintln!("hello-cli: this line goes to stderr");

    // WASI 0.2's `exit` carries only success or failure: any non-zero code reaches the host as 1
    // unless the guest uses the unstable `exit-with-code` interface.
    match std::env::var("EXIT_CODE").ok().map(|v| v.parse::<u8>()) {
        None => ExitCode::SUCCESS,
        Some(Ok(code)) => ExitCode::from(code),
        Some(Err(_)) => {
            eprintln!("hello-cli: EXIT_CODE must be a number from 0 to 255");
            ExitCode::from(2)
        }
    }
}
