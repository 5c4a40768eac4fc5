//! `cascade metrics --listen`: serves the deployment's metrics until interrupted.

use std::sync::Arc;

use cascade::{MetricsServer, Result};

use crate::deployment::Deployment;

/// Listens on `listen` and serves until the process is stopped.
pub fn run(deployment: &Deployment, listen: &str, json: bool) -> Result<()> {
    let server = MetricsServer::start(listen, Arc::downgrade(&deployment.store))?;
    let url = format!("http://{}/metrics", server.local_addr());
    if json {
        println!("{}", serde_json::json!({ "serving": url }));
    } else {
        println!("serving {url} (Ctrl-C stops)");
    }
    // Line-buffered stdout may not reach a pipe before the wait: tests read this line.
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    loop {
        std::thread::park();
    }
}
