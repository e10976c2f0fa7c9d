//! A raw HTTP/1.1 client: the test writes every byte of its requests, decides every
//! pause, and reads the answers as sent.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A connection whose requests the test writes byte by byte; the bytes read past the
/// answer asked for are kept for the next.
pub struct Raw(pub TcpStream, Vec<u8>);

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        Raw(TcpStream::connect(addr).await.expect("connect"), Vec::new())
    }

    pub async fn send(&mut self, bytes: &str) {
        self.0.write_all(bytes.as_bytes()).await.expect("write");
    }

    /// `GET path` on this connection, kept alive.
    pub async fn get(&mut self, path: &str) {
        self.send(&format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n"))
            .await;
    }

    /// The start of a JSON `POST` that announces a body of 100 bytes and sends 10.
    pub async fn post_half_a_body(&mut self, path: &str, key: &str, extra_header: &str) {
        self.send(&format!(
            "POST {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n{extra_header}\r\n\
             {{\"tenant\":"
        ))
        .await;
    }

    /// The next response's status line, headers and body (by `Content-Length`); `None`
    /// if the connection closes first.
    pub async fn response(&mut self) -> Option<String> {
        let mut buf = std::mem::take(&mut self.1);
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().expect("content-length"));
                if buf.len() >= end + 4 + length {
                    self.1 = buf.split_off(end + 4 + length);
                    return Some(String::from_utf8_lossy(&buf).into_owned());
                }
            }
            match self.0.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Waits, up to `within`, for the server to close the connection; how long it took.
    pub async fn closed(&mut self, within: Duration) -> Option<Duration> {
        let started = Instant::now();
        let mut chunk = [0u8; 4096];
        tokio::time::timeout(within, async {
            loop {
                match self.0.read(&mut chunk).await {
                    Ok(0) | Err(_) => return started.elapsed(),
                    Ok(_) => {}
                }
            }
        })
        .await
        .ok()
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
