//! Each operation costs the fewest HTTP requests it can. Counted by a
//! pass-through proxy in front of a real Azurite: the requests are real, only
//! counted on their way.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Result;
use durable_status::emulator::Azurite;
use durable_status::{
    CustomStatus, InstanceStore, JsonText, NewInstance, StorageConfig, WriteCondition,
};
use serde_json::json;

/// Forwards loopback TCP to `upstream`, counting HTTP/1.1 request lines.
fn counting_proxy(upstream: u16) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&count);
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { break };
            let server = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
            let (client_read, server_write) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            let counter = Arc::clone(&counter);
            std::thread::spawn(move || pump(client_read, server_write, Some(counter)));
            std::thread::spawn(move || pump(server, client, None));
        }
    });
    (port, count)
}

fn pump(mut from: TcpStream, mut to: TcpStream, counter: Option<Arc<AtomicUsize>>) {
    const REQUEST_LINE_END: &[u8] = b" HTTP/1.1\r\n";
    let mut buf = [0u8; 16 * 1024];
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(counter) = &counter {
            carry.extend_from_slice(&buf[..n]);
            let found = carry
                .windows(REQUEST_LINE_END.len())
                .filter(|w| *w == REQUEST_LINE_END)
                .count();
            counter.fetch_add(found, Ordering::SeqCst);
            // Keep a tail shorter than the pattern, so no match is counted twice.
            let keep = carry.len().min(REQUEST_LINE_END.len() - 1);
            carry.drain(..carry.len() - keep);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

#[tokio::test]
async fn every_operation_takes_the_fewest_requests() -> Result<()> {
    let azurite = Azurite::start_bundled()?;
    let (port, requests) = counting_proxy(azurite.port());
    let store = InstanceStore::connect(
        &StorageConfig::emulator_at(&format!("http://127.0.0.1:{port}")),
        "CountHub",
    )
    .await?;

    let cost = |label: &str, expected: usize| {
        let n = requests.swap(0, Ordering::SeqCst);
        assert_eq!(n, expected, "{label} took {n} requests");
    };
    cost("connect", 1);

    let etag = store
        .create(NewInstance::new("i", "Orch").input_value(&1)?)
        .await?;
    cost("create", 1);
    store.get("i").await?;
    cost("get", 1);
    store
        .get_with("i", durable_status::ReadOptions::without_payloads())
        .await?;
    cost("get without payloads", 1);
    let status = CustomStatus::from_value(&json!({"progress": 0.5}))?;
    store.set_custom_status("i", Some(&status)).await?;
    cost("set custom status", 1);
    let err = store
        .set_custom_status_if_match("i", Some(&status), &etag)
        .await
        .unwrap_err();
    assert!(matches!(err, durable_status::Error::Conflict { .. }));
    cost("a conditional set that loses", 1);
    store.update_custom_status("i", |_| Ok(None)).await?;
    cost("read-modify-write without contention", 2);

    store.start("i").await?;
    cost("start", 1);
    store.suspend("i").await?;
    cost("suspend", 1);
    store.resume("i").await?;
    cost("resume", 1);
    store
        .continue_as_new("i", Some(JsonText::from_value(&2)?))
        .await?;
    cost("continue as new", 1);
    store.complete("i", None).await?;
    cost("complete", 1);
    store.fail("i", "x").await?;
    cost("fail", 1);
    store.terminate("i", "y").await?;
    cost("terminate", 1);
    store
        .delete_with("i", &WriteCondition::Unconditional)
        .await?;
    cost("delete", 1);

    let oversized = CustomStatus::from_value(&"x".repeat(20_000))?;
    assert!(store
        .set_custom_status("i", Some(&oversized))
        .await
        .is_err());
    assert!(store.create(NewInstance::new("", "Orch")).await.is_err());
    cost("refused input", 0);
    Ok(())
}
