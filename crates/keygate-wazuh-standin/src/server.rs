//! The HTTPS server both stand-ins run: a free port of 127.0.0.1, a
//! certificate from a CA generated at start, its own thread and runtime,
//! stopped when dropped.

use std::future::Future;

use tokio_rustls::TlsAcceptor;

/// A running TLS server; stopped (and its thread joined) when dropped.
pub(crate) struct TlsServer {
    port: u16,
    ca_pem: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TlsServer {
    /// Starts the server: `on_connection` is called on the accept loop for
    /// each accepted connection, and the future it returns is spawned.
    pub(crate) fn start<F, Fut>(on_connection: F) -> Self
    where
        F: Fn(TlsAcceptor, tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (ca_pem, server_config) = crate::certificates();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let acceptor = TlsAcceptor::from(server_config);
                loop {
                    let tcp = tokio::select! {
                        _ = &mut stopped => return,
                        accepted = listener.accept() => match accepted {
                            Ok((tcp, _)) => tcp,
                            Err(_) => continue,
                        },
                    };
                    tokio::spawn(on_connection(acceptor.clone(), tcp));
                }
            });
        });
        Self {
            port,
            ca_pem,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// The port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `https://localhost:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// The CA certificate (PEM) that signed the server's certificate.
    pub(crate) fn ca_pem(&self) -> &str {
        &self.ca_pem
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
