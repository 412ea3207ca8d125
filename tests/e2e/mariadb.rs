//! A real MariaDB server, started on a unix socket in a temporary directory and stopped
//! when dropped. `.ci/run` installs mariadb-server; nothing here is a mock.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct MariaDb {
    pub dir: tempfile::TempDir,
    server: Child,
}

fn find(bin: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(bin);
        if p.exists() {
            return p;
        }
    }
    panic!(
        "{bin} is not installed: the state tests need mariadb-server (`.ci/run` installs it with apt-get)"
    );
}

impl MariaDb {
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("cairn-mariadb-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        // Each server its own temporary directory: two bootstraps at once in /tmp once
        // failed with "Could not remove temporary table '/tmp/#sql-temptable-…', error: 2".
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        // SAFETY: geteuid has no preconditions.
        let user = if unsafe { libc::geteuid() } == 0 {
            "root".to_string()
        } else {
            std::env::var("USER").unwrap()
        };
        let out = Command::new(find("mariadb-install-db"))
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--user={user}"))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .arg(format!("--tmpdir={}", tmp.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mariadb-install-db: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let server = Command::new(find("mariadbd"))
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", dir.path().join("sock").display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg("--skip-networking")
            .arg("--innodb-buffer-pool-size=16M")
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg(format!("--user={user}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("server.log")).unwrap(),
            ))
            .spawn()
            .unwrap();
        let db = Self { dir, server };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !db.ping() {
            assert!(
                Instant::now() < deadline,
                "mariadbd did not start: {}",
                db.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        db
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn ping(&self) -> bool {
        self.socket().exists()
            && Command::new(find("mariadb-admin"))
                .arg(format!("--socket={}", self.socket().display()))
                .args(["-uroot", "ping"])
                .output()
                .is_ok_and(|o| o.status.success())
    }

    /// The client command line for the service file and for queries.
    pub fn client(&self) -> String {
        format!(
            "{} --socket={} -uroot",
            find("mariadb").display(),
            self.socket().display()
        )
    }

    pub fn dump_cmd(&self, db: &str) -> String {
        format!(
            "{} --socket={} -uroot --single-transaction --add-drop-database --databases {db}",
            find("mariadb-dump").display(),
            self.socket().display()
        )
    }

    /// Runs SQL (fed on standard input, so it may be long); panics on error.
    pub fn sql(&self, sql: &str) -> String {
        use std::io::Write;
        let mut child = Command::new(find("mariadb"))
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-uroot", "--batch", "--skip-column-names"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(sql.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "SQL failed: {:.300}\n{}",
            sql,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// What a database holds, table by table: column definitions, row count and CHECKSUM TABLE.
    pub fn fingerprint(&self, db: &str) -> Vec<String> {
        let tables = self.sql(&format!(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = '{db}' ORDER BY table_name"
        ));
        let mut out = Vec::new();
        for t in tables.lines() {
            let cols = self.sql(&format!(
                "SELECT GROUP_CONCAT(column_name, ' ', column_type ORDER BY ordinal_position) \
                 FROM information_schema.columns WHERE table_schema = '{db}' AND table_name = '{t}'"
            ));
            let count = self.sql(&format!("SELECT COUNT(*) FROM `{db}`.`{t}`"));
            let sum = self.sql(&format!("CHECKSUM TABLE `{db}`.`{t}`"));
            out.push(format!(
                "{t}: [{}] rows {} checksum {}",
                cols.trim(),
                count.trim(),
                sum.trim()
            ));
        }
        out
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        // SAFETY: signals our own child.
        unsafe { libc::kill(self.server.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.server.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}
