//! A store's metrics, rendered and scraped over loopback HTTP (`metrics_listen`).
#![cfg(feature = "metrics-http")]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cascade::{BlockId, Cascade, CascadeConfig, ErrorKind, MetricsServer};

fn config(listen: Option<&str>) -> CascadeConfig {
    let text = "[[tiers]]\nkind = \"memory\"\ncapacity = \"1 MiB\"\n\n[[tiers]]\nkind = \"memory\"\nname = \"cold\"\ncapacity = \"4 MiB\"\n";
    let mut config = CascadeConfig::from_toml_str(text).expect("config");
    config.metrics_listen = listen.map(str::to_string);
    config
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    probe.local_addr().expect("addr").port()
}

/// (status code, body) of `GET path` at `addr`.
fn get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn a_store_with_metrics_listen_serves_what_it_holds() {
    let addr = format!("127.0.0.1:{}", free_port());
    let store = Cascade::open_shared(&config(Some(&addr))).expect("open with metrics_listen");
    let block = vec![3u8; 300 << 10];
    for n in 0..5u128 {
        store.put(BlockId::from_u128(n), &block).expect("put");
    }
    let mut out = vec![0u8; block.len()];
    assert_eq!(
        store.get(BlockId::from_u128(4), &mut out).expect("get"),
        Some(block.len())
    );
    assert_eq!(
        store.get(BlockId::from_u128(99), &mut out).expect("get"),
        None
    );

    let (status, body) = get(&addr, "/metrics").expect("scrape");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        store.metrics_text(),
        "the endpoint serves the store's text"
    );
    let hot = "{tier=\"memory0\",kind=\"memory\"}";
    let cold = "{tier=\"cold\",kind=\"memory\"}";
    let stats = store.stats();
    assert_eq!(value(&body, "cascade_misses_total"), Some(1.0));
    assert_eq!(
        value(&body, &format!("cascade_tier_blocks{hot}")),
        Some(stats.tiers[0].blocks as f64)
    );
    assert_eq!(
        value(&body, &format!("cascade_tier_blocks{cold}")),
        Some(stats.tiers[1].blocks as f64)
    );
    assert!(
        stats.tiers[0].demotions > 0,
        "5 blocks of 300 KiB overflow 1 MiB"
    );
    assert_eq!(
        value(&body, &format!("cascade_tier_demotions_total{hot}")),
        Some(stats.tiers[0].demotions as f64)
    );
    assert_eq!(
        value(&body, &format!("cascade_tier_capacity_bytes{cold}")),
        Some((4u64 << 20) as f64)
    );
    assert_eq!(get(&addr, "/other").expect("404").0, 404);

    // Closing the store stops the server and frees the port.
    drop(store);
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(&addr, "/metrics").is_ok_and(|(status, _)| status == 200) {
        assert!(
            Instant::now() < deadline,
            "still served after the store closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let again = loop {
        match Cascade::open_shared(&config(Some(&addr))) {
            Ok(store) => break store,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("the port stayed taken: {e}"),
        }
    };
    assert_eq!(get(&addr, "/metrics").expect("scrape").0, 200);
    drop(again);
}

#[test]
fn a_taken_port_and_an_unshared_open_are_config_errors() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let err = Cascade::open_shared(&config(Some(&addr))).expect_err("port taken");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains(&addr), "{err}");
    let err = Cascade::open(&config(Some("127.0.0.1:0"))).expect_err("not shared");
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("metrics_listen"), "{err}");
    let parsed = CascadeConfig::from_toml_str(
        "metrics_listen = \"127.0.0.1:9464\"\n[[tiers]]\nkind = \"memory\"\n",
    )
    .expect("metrics_listen is a deployment key");
    assert_eq!(parsed.metrics_listen.as_deref(), Some("127.0.0.1:9464"));
    assert!(
        Cascade::default_config()
            .expect("default")
            .metrics_listen
            .is_none(),
        "off by default"
    );
}

#[test]
fn a_server_started_by_hand_stops_when_dropped() {
    let store = std::sync::Arc::new(Cascade::open(&config(None)).expect("open"));
    let server = MetricsServer::start("127.0.0.1:0", std::sync::Arc::downgrade(&store))
        .expect("listen on a free port");
    let addr = server.local_addr().to_string();
    store.put(BlockId::from_u128(1), b"kv").expect("put");
    let (status, body) = get(&addr, "/metrics").expect("scrape");
    assert_eq!(status, 200);
    assert_eq!(
        value(
            &body,
            "cascade_tier_puts_total{tier=\"memory0\",kind=\"memory\"}"
        ),
        Some(1.0)
    );
    drop(server);
    assert!(
        get(&addr, "/metrics").is_err(),
        "nothing listens once dropped"
    );
}
