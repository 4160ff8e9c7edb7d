//! PostgreSQL away for 60 s under load on 3 replicas. The replicas reach the database through a
//! relay this test can cut (the real server keeps running for the other tests): they keep
//! serving on their leases and cached keys, answer 500 `db_error` once a lease runs out, and
//! when the database is back every completed response has exactly one record.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use crate::helpers::*;
use crate::pg::TestDb;
use crate::replicas::{audit, start_replicas_via};

/// A TCP relay to the database that can be cut: cutting closes every relayed connection and
/// refuses new ones, as a stopped server would.
struct Relay {
    addr: String,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Relay {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cut = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (c, cs) = (cut.clone(), conns.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if c.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                cs.lock().push(task.abort_handle());
            }
        });
        Self { addr, cut, conns }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for c in self.conns.lock().drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct Tally {
    /// Completed 200s: request id → when (seconds since the start).
    completed: HashMap<String, f64>,
    statuses: HashMap<u16, usize>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_seconds_without_postgres_under_load_loses_and_doubles_nothing() {
    let relay = Relay::start(TestDb::server_addr()).await;
    let r = start_replicas_via(3, Some(&relay.addr)).await;
    let http = reqwest::Client::new();
    let (account, _, key) = create_account_and_key(&http, &r.bases[0], &r.admin).await;
    grant(&http, &r.bases[0], &r.admin, &account, "100").await;

    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (http, base, key) = (http.clone(), r.bases[i % 3].clone(), key.clone());
        let (stop, tally) = (stop.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let stream = n.is_multiple_of(2);
                let resp = http
                    .post(format!("{base}/v1/chat/completions"))
                    .bearer_auth(&key)
                    .json(
                        &json!({"model": "gpt-4o-mini", "stream": stream, "max_tokens": 16,
                                  "messages": [{"role": "user", "content": "outage"}]}),
                    )
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                let id = request_id(&resp);
                let text = resp.text().await.unwrap();
                let at = start.elapsed().as_secs_f64();
                {
                    let mut t = tally.lock();
                    *t.statuses.entry(status).or_default() += 1;
                    match status {
                        200 => {
                            let done = if stream {
                                text.trim_end().ends_with("[DONE]")
                            } else {
                                text.starts_with('{')
                            };
                            assert!(done, "a 200 that did not complete: {text}");
                            t.completed.insert(id, at);
                        }
                        // A lease run out while the database is away.
                        500 => assert!(text.contains("db_error"), "{text}"),
                        other => panic!("unexpected {other}: {text}"),
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(3)).await;
    let cut_at = start.elapsed().as_secs_f64();
    relay.cut();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let back_at = start.elapsed().as_secs_f64();
    relay.restore();
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    let tally = std::mem::take(&mut *tally.lock());
    let during = tally
        .completed
        .values()
        .filter(|&&at| at > cut_at + 1.0 && at < back_at)
        .count();
    let after = tally
        .completed
        .values()
        .filter(|&&at| at > back_at + 5.0)
        .count();
    eprintln!(
        "outage: {:?}; served during the outage {during}, in the last 5 s {after}",
        tally.statuses
    );
    assert!(during > 10, "served on leases while the database was away");
    assert!(
        after > 20,
        "the pools recovered by themselves and serve again"
    );

    // Every completed response reaches the database exactly once.
    let c = r.db.client().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let stored: HashMap<String, i64> = loop {
        let rows = c
            .query(
                "SELECT request_id, COUNT(*) FROM usage_records \
                 WHERE account_id = $1 AND status = 'success' GROUP BY 1",
                &[&account],
            )
            .await
            .unwrap();
        let stored: HashMap<String, i64> =
            rows.iter().map(|row| (row.get(0), row.get(1))).collect();
        if stored.len() >= tally.completed.len() || Instant::now() > deadline {
            break stored;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for id in tally.completed.keys() {
        assert_eq!(stored.get(id), Some(&1), "{id}: exactly one record");
    }
    assert_eq!(
        stored.len(),
        tally.completed.len(),
        "no success record without a completed response"
    );
    let a = audit(&http, &r.bases[1], &r.admin, &account).await;
    assert_eq!(a["charges_nanos"], a["charges_nanos_records"], "{a}");
    assert_eq!(a["consistent"], true, "{a}");
}
