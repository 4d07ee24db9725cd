//! The suite's private PostgreSQL cluster: restarted, its backends terminated, its
//! connection slots taken. Every scenario starts with [`Cluster::private`], which refuses
//! to go on unless the server in `ADOPT_TEST_PG` is the cluster that `scripts/chaos`
//! started in `CHAOS_PG_DIR`: the shared cluster on 5432 is never touched.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};

use crate::helpers::server_url;

#[derive(Clone)]
pub struct Cluster {
    /// `postgres://postgres@127.0.0.1:PORT` (no database).
    pub server: String,
    data: PathBuf,
    log: PathBuf,
    pg_ctl: PathBuf,
    /// Set when the cluster belongs to another user (we run as root, it runs as postgres).
    owner: Option<String>,
}

impl Cluster {
    /// The private cluster, checked: `CHAOS_PG_DIR` must be set (by `scripts/chaos`) and
    /// the server must report `CHAOS_PG_DIR/data` as its data directory.
    pub async fn private() -> Cluster {
        let dir = std::env::var("CHAOS_PG_DIR").unwrap_or_else(|_| {
            panic!(
                "CHAOS_PG_DIR is not set: the chaos suite restarts PostgreSQL and must run on \
                 its own private cluster; run it with scripts/chaos"
            )
        });
        let data = canonical(&Path::new(&dir).join("data"));
        let server = server_url();
        let mut conn = PgConnection::connect(&format!("{server}/postgres"))
            .await
            .unwrap_or_else(|e| panic!("cannot reach the chaos cluster at {server}: {e}"));
        let reported: String = sqlx::query_scalar("SELECT current_setting('data_directory')")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            canonical(Path::new(&reported)),
            data,
            "ADOPT_TEST_PG ({server}) is not the private chaos cluster in {dir}; refusing to run"
        );
        let bindir: String =
            sqlx::query_scalar("SELECT setting FROM pg_config WHERE name = 'BINDIR'")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        conn.close().await.ok();
        let owner = file_owner(&data).filter(|o| Some(o) != current_user().as_ref());
        Cluster {
            server,
            log: Path::new(&dir).join("postgresql.log"),
            data,
            pg_ctl: Path::new(&bindir).join("pg_ctl"),
            owner,
        }
    }

    /// `pg_ctl restart -m fast`: every session is cut, the server comes back on the same
    /// port. Returns how long pg_ctl took (the server was unavailable about that long).
    pub fn restart(&self) -> Duration {
        self.pg_ctl(&["-m", "fast", "restart"])
    }

    /// `pg_ctl stop -m fast`: every session is cut and the server stays down.
    pub fn stop(&self) -> Duration {
        self.pg_ctl(&["-m", "fast", "stop"])
    }

    /// Starts the server again after [`Cluster::stop`], on its port.
    pub fn start(&self) -> Duration {
        let port = self
            .server
            .rsplit_once(':')
            .map(|(_, p)| p.to_string())
            .expect("the server URL names a port");
        self.pg_ctl(&["-o", &format!("-p {port}"), "start"])
    }

    fn pg_ctl(&self, args: &[&str]) -> Duration {
        let started = Instant::now();
        let mut cmd = match &self.owner {
            Some(owner) => {
                let mut c = std::process::Command::new("runuser");
                c.args(["-u", owner, "--"]).arg(&self.pg_ctl);
                c
            }
            None => std::process::Command::new(&self.pg_ctl),
        };
        // -l: a started postmaster must not inherit our stdout, or we would wait on it forever.
        let status = cmd
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&self.log)
            .args(["-w", "-t", "60"])
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .status()
            .expect("run pg_ctl");
        assert!(status.success(), "pg_ctl {args:?} failed: {status}");
        started.elapsed()
    }

    /// A connection to database `db` that is not one of the workers' (for snapshots and
    /// faults while their pools are in trouble).
    pub async fn connect(&self, db: &str) -> Result<PgConnection, sqlx::Error> {
        let opts = format!("{}/{db}", self.server)
            .parse::<sqlx::postgres::PgConnectOptions>()?
            .options([("TimeZone", "UTC")])
            .application_name("adopt-worker-chaos");
        PgConnection::connect_with(&opts).await
    }

    /// Connects until `deadline`, retrying while the server is (re)starting.
    pub async fn connect_retrying(&self, db: &str, deadline: Duration) -> PgConnection {
        let until = Instant::now() + deadline;
        loop {
            match self.connect(db).await {
                Ok(c) => return c,
                Err(e) if Instant::now() < until => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("the chaos cluster did not come back: {e}"),
            }
        }
    }
}

/// `max_connections` of the server.
pub async fn max_connections(conn: &mut PgConnection) -> i64 {
    let s: String = sqlx::query_scalar("SELECT current_setting('max_connections')")
        .fetch_one(conn)
        .await
        .unwrap();
    s.parse().unwrap()
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

fn file_owner(p: &Path) -> Option<String> {
    let out = std::process::Command::new("stat")
        .args(["-c", "%U"])
        .arg(p)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn current_user() -> Option<String> {
    let out = std::process::Command::new("id").arg("-un").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
