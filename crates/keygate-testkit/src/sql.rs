//! Databases and SQL servers for tests of the MySQL/MariaDB and PostgreSQL
//! backends:
//!
//! - [`TestDb`]: a database of its own (unique name) on a shared server,
//!   loaded from the `docker/initdb/<kind>/*.sql` fixtures that
//!   docker/compose.yaml loads too, and dropped again on `Drop`.
//! - [`PrivateMariadb`] / [`PrivatePostgres`]: a server owned by one test, on a
//!   free loopback port, that the test may stop and start again without
//!   disturbing the shared servers or other tests.
//!
//! Everything here is synchronous: database work runs on a helper thread
//! with its own runtime, so both `#[test]` and `#[tokio::test]` can use it.
//! A missing server fails the test loudly; nothing is skipped.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sqlx::Connection;

use crate::{fixture, free_port};

/// The shared MariaDB/MySQL server (`KEYGATE_TEST_MYSQL_URL`).
pub fn mysql_url() -> String {
    std::env::var("KEYGATE_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into())
}

/// The shared PostgreSQL server (`KEYGATE_TEST_POSTGRES_URL`).
pub fn postgres_url() -> String {
    std::env::var("KEYGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/postgres".into())
}

/// Which server a database lives on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// MySQL or MariaDB.
    Mysql,
    /// PostgreSQL.
    Postgres,
}

impl Kind {
    fn dir(self) -> &'static str {
        match self {
            Kind::Mysql => "mysql",
            Kind::Postgres => "postgres",
        }
    }
}

/// Runs the future `f` makes to completion on a fresh thread with its own
/// runtime (the future itself need not be `Send`).
pub fn block_on<T, F>(f: impl FnOnce() -> F + Send + 'static) -> T
where
    T: Send + 'static,
    F: Future<Output = T>,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
    .join()
    .unwrap()
}

/// `url` with its database (path) replaced by `db`; the query string kept.
pub fn with_database(url: &str, db: &str) -> String {
    let scheme_end = url.find("://").unwrap() + 3;
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let query = rest[authority_end..]
        .find('?')
        .map(|q| &rest[authority_end + q..])
        .unwrap_or("");
    format!(
        "{}{}/{db}{query}",
        &url[..scheme_end],
        &rest[..authority_end]
    )
}

/// `url` with its password set to `password` (user kept).
pub fn with_password(url: &str, password: &str) -> String {
    let scheme_end = url.find("://").unwrap() + 3;
    let rest = &url[scheme_end..];
    let at = rest.find('@').expect("the URL names a user");
    let user = rest[..at].split(':').next().unwrap();
    format!("{}{user}:{password}{}", &url[..scheme_end], &rest[at..])
}

/// `url` with its user set to `user` and no password.
pub fn with_user(url: &str, user: &str) -> String {
    let scheme_end = url.find("://").unwrap() + 3;
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let host = match rest[..authority_end].rfind('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    format!("{}{user}@{host}", &url[..scheme_end])
}

/// The fixture files compose loads for `kind`, in order.
pub fn fixture_files(kind: Kind) -> Vec<PathBuf> {
    let dir = fixture("docker/initdb").join(kind.dir());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .sql files in {}", dir.display());
    files
}

async fn execute(kind: Kind, url: &str, sql: &str) -> Result<(), sqlx::Error> {
    match kind {
        Kind::Mysql => {
            let mut c = sqlx::MySqlConnection::connect(url).await?;
            sqlx::raw_sql(sql).execute(&mut c).await?;
            c.close().await
        }
        Kind::Postgres => {
            let mut c = sqlx::PgConnection::connect(url).await?;
            sqlx::raw_sql(sql).execute(&mut c).await?;
            c.close().await
        }
    }
}

/// Runs `sql` (any number of statements) against `url`, panicking loudly
/// when the server cannot be reached.
pub fn run_sql(kind: Kind, url: &str, sql: &str) {
    let (u, s) = (url.to_owned(), sql.to_owned());
    if let Err(e) = block_on(move || async move { execute(kind, &u, &s).await }) {
        panic!("{kind:?} server at {url} failed ({e}); is it running? (bash tests/setup.sh)");
    }
}

/// The first column of every row `sql` returns on `url`, as text (`None`
/// for NULL), panicking loudly when the server cannot be reached.
pub fn query_texts(kind: Kind, url: &str, sql: &str) -> Vec<Option<String>> {
    let (u, s) = (url.to_owned(), sql.to_owned());
    let rows = block_on(move || async move {
        match kind {
            Kind::Mysql => {
                let mut c = sqlx::MySqlConnection::connect(&u).await?;
                sqlx::query_scalar(&s).fetch_all(&mut c).await
            }
            Kind::Postgres => {
                let mut c = sqlx::PgConnection::connect(&u).await?;
                sqlx::query_scalar(&s).fetch_all(&mut c).await
            }
        }
    });
    rows.unwrap_or_else(|e| panic!("{kind:?} server at {url}: {sql}: {e} (bash tests/setup.sh)"))
}

/// Loads every fixture file for `kind` into the database at `url`.
pub fn load_fixtures(kind: Kind, url: &str) {
    for file in fixture_files(kind) {
        let sql = std::fs::read_to_string(&file).unwrap();
        run_sql(kind, url, &sql);
    }
}

/// A database of its own on a server, loaded with the fixtures, dropped on
/// `Drop`.
pub struct TestDb {
    kind: Kind,
    admin_url: String,
    name: String,
    url: String,
    /// Users made by [`TestDb::mysql_reader`], dropped with the database.
    users: Vec<String>,
}

/// The hosts a MySQL user is created for: `localhost` and `127.0.0.1` as
/// well as `%`, so that no anonymous `''@'localhost'` account shadows it.
const USER_HOSTS: [&str; 3] = ["%", "localhost", "127.0.0.1"];

impl TestDb {
    /// A fresh database on the shared MariaDB/MySQL server.
    pub fn mysql() -> Self {
        Self::create(Kind::Mysql, &mysql_url())
    }

    /// A fresh database on the shared PostgreSQL server.
    pub fn postgres() -> Self {
        Self::create(Kind::Postgres, &postgres_url())
    }

    /// A fresh database on the server at `admin_url`, loaded with the
    /// fixtures.
    pub fn create(kind: Kind, admin_url: &str) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "keygate_test_{}_{}_{nanos}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        run_sql(kind, admin_url, &format!("CREATE DATABASE {name}"));
        let db = Self {
            kind,
            admin_url: admin_url.to_owned(),
            url: with_database(admin_url, &name),
            name,
            users: Vec::new(),
        };
        load_fixtures(kind, &db.url);
        db
    }

    /// The URL of this database (with the server's credentials).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A MySQL/MariaDB user of its own that logs in with `password` and may
    /// read this database, dropped with it; returns the database's URL for
    /// that user, without the password. (The shared PostgreSQL server
    /// trusts every user and never checks a password: a test that needs a
    /// real one uses [`PrivatePostgres`].)
    pub fn mysql_reader(&mut self, password: &str) -> String {
        assert_eq!(self.kind, Kind::Mysql, "mysql_reader is for MySQL/MariaDB");
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let user = format!(
            "kgr_{}_{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut sql = Vec::new();
        for host in USER_HOSTS {
            sql.push(format!(
                "CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}'"
            ));
            sql.push(format!(
                "GRANT SELECT ON `{}`.* TO '{user}'@'{host}'",
                self.name
            ));
        }
        self.users.push(user.clone());
        run_sql(self.kind, &self.admin_url, &sql.join(";\n"));
        with_user(&self.url, &user)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if !self.users.is_empty() {
            let sql: Vec<String> = self
                .users
                .iter()
                .flat_map(|u| USER_HOSTS.map(|h| format!("DROP USER IF EXISTS '{u}'@'{h}'")))
                .collect();
            let (kind, url, sql) = (self.kind, self.admin_url.clone(), sql.join(";\n"));
            let _ = block_on(move || async move { execute(kind, &url, &sql).await });
        }
        let sql = match self.kind {
            Kind::Mysql => format!("DROP DATABASE IF EXISTS {}", self.name),
            // Pools of the backend under test may still be connected.
            Kind::Postgres => format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        };
        let (kind, url) = (self.kind, self.admin_url.clone());
        let _ = block_on(move || async move { execute(kind, &url, &sql).await });
    }
}

/// Waits until `sql` succeeds on `url`, up to `limit`.
pub fn wait_until_up(kind: Kind, url: &str, limit: Duration) {
    let started = Instant::now();
    loop {
        let u = url.to_owned();
        let ok = block_on(move || async move { execute(kind, &u, "SELECT 1").await });
        match ok {
            Ok(()) => return,
            Err(e) if started.elapsed() > limit => {
                panic!("{kind:?} server did not come up within {limit:?}: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A MariaDB server owned by one test: empty temp datadir (no grant tables:
/// `--skip-grant-tables`, so any user and password get in), its own socket
/// and a free loopback port. Killed on `Drop`.
pub struct PrivateMariadb {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl PrivateMariadb {
    /// Starts a fresh server and waits until it answers.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let mut server = Self {
            dir,
            port: free_port(),
            child: None,
        };
        server.start_again();
        server
    }

    fn mariadbd() -> PathBuf {
        [
            "/usr/sbin/mariadbd",
            "/usr/bin/mariadbd",
            "/usr/sbin/mysqld",
        ]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("mariadbd is not installed (bash tests/setup.sh installs it)")
    }

    /// Starts the server again on the same port and datadir.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("mariadbd.log"))
            .unwrap();
        let child = Command::new(Self::mariadbd())
            .arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--socket={}", d.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", d.join("mysqld.pid").display()))
            .arg(format!("--port={}", self.port))
            .args([
                "--bind-address=127.0.0.1",
                "--user=root",
                "--skip-grant-tables",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=16M",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("cannot start mariadbd");
        self.child = Some(child);
        wait_until_up(Kind::Mysql, &self.url(), Duration::from_secs(30));
    }

    /// Stops the server (SIGTERM, as `systemctl stop` does) and waits for
    /// it to exit. (SIGKILL right after creating a fresh datadir can leave
    /// InnoDB's system tablespace unreadable, so it is not used.)
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }

    /// `mysql://root@127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    /// The same server through its Unix socket:
    /// `mysql://root@localhost?socket=DIR/mysqld.sock`.
    pub fn socket_url(&self) -> String {
        format!(
            "mysql://root@localhost?socket={}",
            self.dir.path().join("mysqld.sock").display()
        )
    }
}

impl Drop for PrivateMariadb {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A PostgreSQL cluster owned by one test: `initdb` into a temp dir owned
/// by `postgres` (initdb refuses root), password authentication
/// (scram-sha-256) for user `postgres`, a free loopback port and its own
/// socket dir. Stopped on `Drop`.
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
    running: bool,
}

/// The password of [`PrivatePostgres`]'s `postgres` user.
pub const PRIVATE_PG_PASSWORD: &str = "kg-test-pg-pass";

impl PrivatePostgres {
    /// Creates and starts a fresh cluster and waits until it answers.
    pub fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries are not installed (bash tests/setup.sh)")
            .map(|e| e.unwrap().path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .max_by_key(|b| {
                b.parent()
                    .and_then(|v| v.file_name())
                    .and_then(|v| v.to_str())
                    .and_then(|v| v.parse::<u32>().ok())
                    .unwrap_or(0)
            })
            .expect("no /usr/lib/postgresql/*/bin/initdb");
        let dir = tempfile::tempdir().unwrap();
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PRIVATE_PG_PASSWORD).unwrap();
        chown_postgres(dir.path());
        let status = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("initdb"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-U", "postgres", "--auth=scram-sha-256", "-N"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("cannot run initdb via runuser");
        assert!(status.success(), "initdb failed");
        let mut server = Self {
            dir,
            port: free_port(),
            bin,
            running: false,
        };
        server.start_again();
        server
    }

    fn pg_ctl(&self, args: &[&str]) -> bool {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Starts the cluster again on the same port and data directory.
    pub fn start_again(&mut self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c ssl=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log");
        let log = log.to_str().unwrap();
        assert!(
            self.pg_ctl(&["-w", "-t", "30", "-l", log, "-o", &opts, "start"]),
            "pg_ctl start failed"
        );
        self.running = true;
        wait_until_up(Kind::Postgres, &self.url(), Duration::from_secs(30));
    }

    /// Stops the cluster at once (`-m immediate`: no goodbye to clients).
    pub fn stop(&mut self) {
        if self.running {
            self.pg_ctl(&["-w", "-m", "immediate", "stop"]);
            self.running = false;
        }
    }

    /// `postgres://postgres:PASSWORD@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres:{PRIVATE_PG_PASSWORD}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    /// The same server through its Unix socket:
    /// `postgres://postgres:PASSWORD@localhost/postgres?host=DIR&port=PORT`.
    pub fn socket_url(&self) -> String {
        format!(
            "postgres://postgres:{PRIVATE_PG_PASSWORD}@localhost/postgres?host={}&port={}",
            self.dir.path().display(),
            self.port
        )
    }

    /// The same URL without the password (for `password_file` tests).
    pub fn url_without_password(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn chown_postgres(path: &Path) {
    let status = Command::new("chown")
        .arg("-R")
        .arg("postgres:postgres")
        .arg(path)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "chown postgres failed (tests run as root)"
    );
}
