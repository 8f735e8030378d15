//! An in-process TCP server on 127.0.0.1 that runs on its own thread with
//! its own current-thread tokio runtime, so it works the same from
//! synchronous tests and from inside any runtime. The fault proxy and the
//! token issuer are both one of these with their own connection handler.

use std::future::Future;
use std::net::TcpListener as StdTcpListener;
use std::thread::JoinHandle;

use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// A server accepting connections on a loopback port until dropped;
/// dropping it stops accepting, cancels open connections and joins the
/// thread.
#[derive(Debug)]
pub struct BackgroundServer {
    host: String,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl BackgroundServer {
    /// Binds `127.0.0.1:0`, makes the connection handler with
    /// `make_handler(host)` (servers that must know their own address, such
    /// as a proxy rewriting `Location`, get it before the first
    /// connection), and hands every accepted connection to it, each on a
    /// task of its own. `name` names the thread and the panics of a server
    /// that cannot start.
    pub fn start<M, H, F>(name: &str, make_handler: M) -> Self
    where
        M: FnOnce(&str) -> H,
        H: Fn(TcpStream) -> F + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let listener = StdTcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("{name} cannot bind 127.0.0.1:0: {e}"));
        let host = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{name} has no local address: {e}"))
            .to_string();
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("{name} cannot make its listener non-blocking: {e}"));
        let handle = make_handler(&host);
        let (shutdown, shutdown_rx) = oneshot::channel();
        let thread_name = format!("{name}-{host}");
        let name = name.to_owned();
        let thread = std::thread::Builder::new()
            .name(thread_name)
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap_or_else(|e| panic!("{name} cannot build its tokio runtime: {e}"));
                rt.block_on(accept_until(listener, handle, shutdown_rx, &name));
                // Dropping the runtime here cancels open connections.
            })
            .unwrap_or_else(|e| panic!("cannot spawn a thread for a test server: {e}"));
        Self {
            host,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:PORT` the server listens on.
    pub fn host(&self) -> &str {
        &self.host
    }
}

async fn accept_until<H, F>(
    listener: StdTcpListener,
    handle: H,
    mut shutdown: oneshot::Receiver<()>,
    name: &str,
) where
    H: Fn(TcpStream) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::from_std(listener)
        .unwrap_or_else(|e| panic!("{name} cannot register its listener with tokio: {e}"));
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    tokio::spawn(handle(stream));
                }
            }
        }
    }
}

impl Drop for BackgroundServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
