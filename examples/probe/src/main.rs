//! A wasi:cli component for the isolation tests: reports, one `what: outcome` line each, what it can see and
//! reach — its environment, the file system, the network by TCP, DNS and wasi:http — so a test can assert
//! that a component without grants sees nothing of the node. With `BOMB_MB=N` it instead allocates and touches
//! memory 1 MiB at a time up to N MiB, reporting every 16 MiB, so a test can watch it stop at its limit.
//!
//! Variables: `PROBE_DIR` (a directory to list and write a file into: a granted volume), `PROBE_TCP` (`HOST:PORT` to connect to),
//! `PROBE_HTTP` (an `http://` URL to request through wasi:http).

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};

use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, OutgoingRequest, Scheme};

fn main() {
    if let Some(mb) = std::env::var("BOMB_MB").ok().and_then(|v| v.parse::<usize>().ok()) {
        bomb(mb);
        return;
    }
    let mut env: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
    env.sort();
    println!("env: {}", env.join(","));
    for path in ["/", "/etc/passwd", "/proc/self/status", "."] {
        println!("fs {path}: {}", outcome(read(path)));
    }
    if let Ok(dir) = std::env::var("PROBE_DIR") {
        println!("fs {dir}: {}", outcome(read(&dir)));
        let wrote = std::fs::write(format!("{dir}/{WRITTEN}"), "probe").map(|()| "wrote".to_string());
        println!("write {dir}: {}", outcome(wrote));
    }
    println!("dns localhost: {}", outcome(("localhost", 80).to_socket_addrs().map(|a| a.count().to_string())));
    if let Ok(addr) = std::env::var("PROBE_TCP") {
        println!("tcp {addr}: {}", outcome(TcpStream::connect(&addr).map(|_| "connected".to_string())));
    }
    if let Ok(url) = std::env::var("PROBE_HTTP") {
        println!("http {url}: {}", outcome(fetch(&url)));
    }
}

/// The file the probe writes into `PROBE_DIR`.
const WRITTEN: &str = "probe-wrote.txt";

fn outcome<E: std::fmt::Debug>(result: Result<String, E>) -> String {
    match result {
        Ok(what) => format!("ok {what}"),
        Err(e) => format!("denied {e:?}"),
    }
}

/// A directory's entry names, or a file's size.
fn read(path: &str) -> std::io::Result<String> {
    if std::fs::metadata(path)?.is_dir() {
        let mut names: Vec<String> =
            std::fs::read_dir(path)?.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into()).collect();
        names.sort();
        Ok(names.join(","))
    } else {
        Ok(format!("{} bytes", std::fs::read(path)?.len()))
    }
}

fn fetch(url: &str) -> Result<String, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("not an http URL: {url}"))?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let request = OutgoingRequest::new(Fields::new());
    request.set_scheme(Some(&Scheme::Http)).map_err(|()| "invalid scheme".to_string())?;
    request.set_authority(Some(authority)).map_err(|()| format!("invalid authority {authority}"))?;
    request.set_path_with_query(Some(&path)).map_err(|()| format!("invalid path {path}"))?;
    let future = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    loop {
        match future.get() {
            Some(Ok(Ok(response))) => return Ok(format!("status {}", response.status())),
            Some(Ok(Err(e))) => return Err(format!("{e:?}")),
            Some(Err(())) => return Err("response already taken".into()),
            None => future.subscribe().block(),
        }
    }
}

fn bomb(limit_mb: usize) {
    let mut held: Vec<Vec<u8>> = Vec::new();
    for mb in 1..=limit_mb {
        held.push(vec![1u8; 1 << 20]);
        if mb % 16 == 0 {
            println!("bomb: {mb} MiB");
            let _ = std::io::stdout().flush();
        }
    }
    println!("bomb: all {limit_mb} MiB allocated");
}
