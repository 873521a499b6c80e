//! A minimal HTTP/1.1 client and a fixed-answer server on std sockets, for node tests that talk to pods.
//!
//! Enough for tests (Content-Length and chunked responses, keep-alive); no TLS, no redirects.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};

/// A response: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body as text (lossy).
    pub body: String,
}

/// The `User-Agent` of the harness's requests unless told otherwise.
pub const DEFAULT_USER_AGENT: &str = "wasmkube-harness";

/// One HTTP/1.1 connection that can carry several requests (keep-alive).
pub struct Connection {
    reader: BufReader<TcpStream>,
    addr: SocketAddr,
}

fn io_err(what: &str, addr: SocketAddr, e: impl std::fmt::Display) -> Error {
    Error::Setup(format!("HTTP {what} {addr}: {e}"))
}

impl Connection {
    /// Connects to `addr`; every read and write is bounded by `timeout`.
    pub fn open(addr: SocketAddr, timeout: Duration) -> Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| io_err("connect to", addr, e))?;
        stream.set_read_timeout(Some(timeout)).map_err(|e| io_err("set up", addr, e))?;
        stream.set_write_timeout(Some(timeout)).map_err(|e| io_err("set up", addr, e))?;
        Ok(Self { reader: BufReader::new(stream), addr })
    }

    /// Sends `method path` with `body` and reads the whole response.
    pub fn request(&mut self, method: &str, path: &str, body: &[u8]) -> Result<Response> {
        self.request_as(DEFAULT_USER_AGENT, method, path, body)
    }

    /// Like [`request`](Self::request) with another `User-Agent` (a kubelet probe's, say).
    pub fn request_as(&mut self, user_agent: &str, method: &str, path: &str, body: &[u8]) -> Result<Response> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nUser-Agent: {user_agent}\r\n\r\n",
            self.addr,
            body.len()
        );
        let stream = self.reader.get_mut();
        stream
            .write_all(head.as_bytes())
            .and_then(|()| stream.write_all(body))
            .map_err(|e| io_err("write to", self.addr, e))?;
        self.read_response()
    }

    fn line(&mut self) -> Result<String> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).map_err(|e| io_err("read from", self.addr, e))?;
        if n == 0 {
            return Err(io_err("read from", self.addr, "connection closed"));
        }
        Ok(line.trim_end().to_string())
    }

    fn read_response(&mut self) -> Result<Response> {
        let status_line = self.line()?;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io_err("parse a response from", self.addr, &status_line))?;
        let (mut length, mut chunked) = (None, false);
        loop {
            let line = self.line()?;
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else { continue };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            if name == "content-length" {
                length = value.parse::<usize>().ok();
            } else if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let size = usize::from_str_radix(self.line()?.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|e| io_err("parse a chunk from", self.addr, e))?;
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk).map_err(|e| io_err("read from", self.addr, e))?;
                body.extend_from_slice(&chunk[..size]);
                if size == 0 {
                    break;
                }
            }
        } else if let Some(n) = length {
            body.resize(n, 0);
            self.reader.read_exact(&mut body).map_err(|e| io_err("read from", self.addr, e))?;
        } else {
            self.reader.read_to_end(&mut body).map_err(|e| io_err("read from", self.addr, e))?;
        }
        Ok(Response { status, body: String::from_utf8_lossy(&body).into_owned() })
    }
}

/// One request on a fresh connection.
pub fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8], timeout: Duration) -> Result<Response> {
    Connection::open(addr, timeout)?.request(method, path, body)
}

/// `GET path` on a fresh connection.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Response> {
    request(addr, "GET", path, b"", timeout)
}

/// `GET path` on a fresh connection with `user_agent`.
pub fn get_as(addr: SocketAddr, user_agent: &str, path: &str, timeout: Duration) -> Result<Response> {
    Connection::open(addr, timeout)?.request_as(user_agent, "GET", path, b"")
}

/// A server answering every request `200 OK` with a fixed body, on a thread, until dropped.
pub struct FixedServer {
    addr: SocketAddr,
    served: Arc<AtomicUsize>,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
}

impl FixedServer {
    /// Listens on `bind` (port 0: any free port).
    pub fn start(bind: SocketAddr, body: &'static str) -> Result<Self> {
        let listener = TcpListener::bind(bind).map_err(|e| io_err("listen on", bind, e))?;
        let addr = listener.local_addr().map_err(|e| io_err("listen on", bind, e))?;
        listener.set_nonblocking(true).map_err(|e| io_err("listen on", bind, e))?;
        let (served, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let (count, halt, seen) = (served.clone(), stop.clone(), peers.clone());
        std::thread::spawn(move || {
            while !halt.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        seen.lock().unwrap_or_else(|p| p.into_inner()).push(peer);
                        if answer(stream, body).is_ok() {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(Self { addr, served, peers, stop })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the connections so far came from.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Requests answered so far.
    pub fn served(&self) -> usize {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for FixedServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn answer(stream: TcpStream, body: &str) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream);
    // Read the request head; the test's requests carry no body.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
    }
    let response = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    reader.get_mut().write_all(response.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_and_server_talk() {
        let server = FixedServer::start("127.0.0.1:0".parse().unwrap(), "fixed").unwrap();
        let r = get(server.addr(), "/x", Duration::from_secs(5)).unwrap();
        assert_eq!(r, Response { status: 200, body: "fixed".into() });
        assert_eq!(server.served(), 1);
    }
}
