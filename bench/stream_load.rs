//! Slow-streams load client: opens N streaming chat completions at once against a gateway (each
//! on its own HTTP/1.1 connection), holds them all until they end, and counts the ones that
//! completed (status 200 and a `data: [DONE]` at the end).
//!
//!   cargo run --release -p tollgate --example stream_load -- --addr 127.0.0.1:8080 \
//!       --key tg-... --streams 4000
//!
//! Options: `--addr HOST:PORT`, `--key KEY` (Bearer), `--streams N` (4,000), `--model M`
//! (gpt-4o-mini), `--timeout-secs S` (120, per stream), `--connects C` (connections being
//! opened at once, 256: a burst of 4,000 SYNs would overflow the listen backlog). The last line
//! is machine-readable:
//! `STREAMS streams=N completed=C failed=F secs=S p50_ms=.. p99_ms=.. max_ms=..`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

async fn one(addr: String, request: Arc<Vec<u8>>, connects: Arc<Semaphore>) -> Result<(), String> {
    let mut s = {
        let _permit = connects.acquire().await.map_err(|e| e.to_string())?;
        TcpStream::connect(&addr).await.map_err(|e| e.to_string())?
    };
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.write_all(&request).await.map_err(|e| e.to_string())?;
    // Only the head and the last bytes are kept: the client must not be what uses the memory.
    let mut head: Vec<u8> = Vec::new();
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        if head.len() < 16 {
            head.extend_from_slice(&buf[..n.min(64)]);
        }
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 256 {
            tail.drain(..tail.len() - 256);
        }
        // Chunked encoding ends with "0\r\n\r\n" after the last event.
        if tail.ends_with(b"0\r\n\r\n") {
            break;
        }
    }
    if !head.starts_with(b"HTTP/1.1 200") {
        return Err(format!(
            "status line {:?}",
            String::from_utf8_lossy(&head[..head.len().min(16)])
        ));
    }
    let done = tail.windows(12).any(|w| w == b"data: [DONE]");
    if !done {
        return Err("stream ended without [DONE]".into());
    }
    Ok(())
}

fn main() {
    let mut addr = String::from("127.0.0.1:8080");
    let mut key = String::new();
    let mut streams: usize = 4000;
    let mut model = String::from("gpt-4o-mini");
    let mut timeout = 120u64;
    let mut connects = 256usize;
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match k.as_str() {
            "--addr" => addr = it.next().unwrap(),
            "--key" => key = it.next().unwrap(),
            "--streams" => streams = it.next().unwrap().parse().unwrap(),
            "--model" => model = it.next().unwrap(),
            "--timeout-secs" => timeout = it.next().unwrap().parse().unwrap(),
            "--connects" => connects = it.next().unwrap().parse().unwrap(),
            other => panic!("unknown argument {other}"),
        }
    }
    let body = format!(
        r#"{{"model":"{model}","messages":[{{"role":"user","content":"hello world"}}],"stream":true}}"#
    );
    let request = Arc::new(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let connects = Arc::new(Semaphore::new(connects.max(1)));
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(streams);
        for _ in 0..streams {
            let (addr, request, connects) = (addr.clone(), request.clone(), connects.clone());
            tasks.push(tokio::spawn(async move {
                let t0 = Instant::now();
                let r = tokio::time::timeout(Duration::from_secs(timeout), one(addr, request, connects))
                    .await
                    .unwrap_or_else(|_| Err("timed out".into()));
                (r, t0.elapsed())
            }));
        }
        let mut ok = 0usize;
        let mut errors: Vec<String> = Vec::new();
        let mut times: Vec<Duration> = Vec::with_capacity(streams);
        for t in tasks {
            let (r, d) = t.await.unwrap();
            match r {
                Ok(()) => {
                    ok += 1;
                    times.push(d);
                }
                Err(e) => errors.push(e),
            }
        }
        let secs = started.elapsed().as_secs_f64();
        times.sort();
        let pct = |p: f64| {
            times
                .get(((times.len() as f64 * p) as usize).min(times.len().saturating_sub(1)))
                .map_or(0, |d| d.as_millis())
        };
        errors.sort();
        errors.dedup();
        for e in errors.iter().take(5) {
            eprintln!("stream_load: error: {e}");
        }
        println!(
            "STREAMS streams={streams} completed={ok} failed={} secs={secs:.2} p50_ms={} p99_ms={} max_ms={}",
            streams - ok,
            pct(0.5),
            pct(0.99),
            times.last().map_or(0, |d| d.as_millis())
        );
    });
}
