//! One cluster's PgBouncer: its folder and files (written whole, then renamed into place; the
//! logins file readable by PgBouncer's user alone), its process, and its admin console (reached
//! on its Unix socket only) for RELOAD, SHOW DATABASES, KILL and SHUTDOWN. A PgBouncer left
//! running by an earlier pooler is taken over rather than started twice.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use tokio::process::{Child, Command};

use crate::render::{Files, PoolEntry, ADMIN_USER, CA, HBA, INI, USERS};

/// How long a started PgBouncer has to answer on its admin console.
const START_WAIT: Duration = Duration::from_secs(10);
/// How long one admin console exchange may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How PgBouncer processes are started.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// The `pgbouncer` executable.
    pub program: PathBuf,
    /// The system user PgBouncer runs as when the pooler runs as root (PgBouncer refuses to run
    /// as root), with its uid and gid; its files are given to it.
    pub run_as: Option<(String, u32, u32)>,
}

impl Launcher {
    /// Starts `program`; as `user` when the pooler runs as root (PgBouncer refuses to).
    pub fn new(program: PathBuf, user: &str) -> anyhow::Result<Self> {
        let run_as = if rustix::process::geteuid().is_root() { Some(system_user(user)?) } else { None };
        Ok(Self { program, run_as })
    }

    /// Fails, saying which folder is in the way, when PgBouncer's user (another than the
    /// pooler's) could not pass through every folder above `dir` to reach its files.
    pub fn check_reachable(&self, dir: &Path) -> anyhow::Result<()> {
        let Some((user, uid, gid)) = &self.run_as else { return Ok(()) };
        for folder in dir.ancestors().skip(1) {
            let meta = std::fs::metadata(folder).with_context(|| format!("reading {}", folder.display()))?;
            let search = if meta.uid() == *uid {
                0o100
            } else if meta.gid() == *gid {
                0o010
            } else {
                0o001
            };
            if meta.mode() & search == 0 {
                bail!(
                    "PgBouncer runs as {user:?}, which may not pass through {} to reach the run directory {}:                      choose another --run-dir (or --pgbouncer-user)",
                    folder.display(),
                    dir.display()
                );
            }
        }
        Ok(())
    }
}

/// A system user's name, uid and gid, from /etc/passwd.
fn system_user(name: &str) -> anyhow::Result<(String, u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&name))
        .and_then(|fields| {
            Some((name.to_string(), fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
        })
        .ok_or_else(|| {
            anyhow!("PgBouncer refuses to run as root, and the user {name:?} to run it as does not exist")
        })
}

/// One cluster's PgBouncer.
#[derive(Debug)]
pub struct Bouncer {
    pub dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

/// A pool as PgBouncer reports it (`SHOW DATABASES`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub host: String,
    pub port: String,
    pub database: String,
    pub force_user: String,
    pub pool_size: String,
    pub pool_mode: String,
    pub max_connections: String,
}

impl Running {
    /// What PgBouncer shows for `pool` leading to `host:port` when it runs it as configured.
    pub fn expected(pool: &PoolEntry, host: &str, port: u16) -> Self {
        Running {
            host: host.to_string(),
            port: port.to_string(),
            database: pool.database.clone(),
            force_user: pool.user.clone().unwrap_or_default(),
            pool_size: pool.size.to_string(),
            pool_mode: pool.mode.as_str().to_string(),
            max_connections: pool.size.to_string(),
        }
    }
}

impl Bouncer {
    pub fn new(dir: PathBuf, port: u16) -> Self {
        Self { dir, port, child: None }
    }

    /// The files as they are on disk (None where one is missing or unreadable).
    pub async fn files_on_disk(&self) -> Option<Files> {
        let read = |name: &str| tokio::fs::read_to_string(self.dir.join(name));
        let (ini, users, hba) = tokio::join!(read(INI), read(USERS), read(HBA));
        Some(Files { ini: ini.ok()?, users: users.ok()?, hba: hba.ok()? })
    }

    /// Writes `files` (and the server's CA, if any) into the folder, each written whole and
    /// renamed into place, readable by PgBouncer's user alone.
    pub async fn write(&self, launcher: &Launcher, files: &Files, ca: Option<&str>) -> anyhow::Result<()> {
        tokio::fs::create_dir_all(&self.dir)
            .await
            .with_context(|| format!("creating {}", self.dir.display()))?;
        set_private(&self.dir, 0o700, launcher).await?;
        let mut all =
            vec![(INI, files.ini.as_str()), (USERS, files.users.as_str()), (HBA, files.hba.as_str())];
        if let Some(ca) = ca {
            all.push((CA, ca));
        }
        for (name, text) in all {
            let path = self.dir.join(name);
            let staged = self.dir.join(format!(".{name}.new"));
            tokio::fs::write(&staged, text).await.with_context(|| format!("writing {}", staged.display()))?;
            set_private(&staged, 0o600, launcher).await?;
            tokio::fs::rename(&staged, &path)
                .await
                .with_context(|| format!("replacing {}", path.display()))?;
        }
        Ok(())
    }

    /// Whether a PgBouncer answers on this folder's admin console (ours, or one an earlier
    /// pooler left running).
    pub async fn answers(&self, admin_password: &str) -> bool {
        self.admin(admin_password, "SHOW VERSION").await.is_ok()
    }

    /// Starts PgBouncer on the written files and waits until its admin console answers.
    pub async fn start(&mut self, launcher: &Launcher, admin_password: &str) -> anyhow::Result<()> {
        let mut command = Command::new(&launcher.program);
        if let Some((user, _, _)) = &launcher.run_as {
            command.arg("-u").arg(user);
        }
        // It lives with the pooler: ended with it (a pooler killed outright leaves it running,
        // and the next one takes it over).
        command.arg(self.dir.join(INI)).stdin(Stdio::null()).stdout(Stdio::null()).kill_on_drop(true);
        let mut child =
            command.spawn().with_context(|| format!("starting {}", launcher.program.display()))?;
        let deadline = tokio::time::Instant::now() + START_WAIT;
        loop {
            if self.answers(admin_password).await {
                self.child = Some(child);
                return Ok(());
            }
            if let Some(status) = child.try_wait()? {
                return Err(anyhow!(
                    "PgBouncer exited at start ({status}); its log is the pooler's standard error"
                ));
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.start_kill();
                return Err(anyhow!("PgBouncer did not answer on its admin console within {START_WAIT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Collects the exit of a PgBouncer this pooler started, if it has ended.
    pub fn reap(&mut self) {
        if let Some(child) = &mut self.child {
            if !matches!(child.try_wait(), Ok(None)) {
                self.child = None;
            }
        }
    }

    /// Makes PgBouncer read its files again.
    pub async fn reload(&self, admin_password: &str) -> anyhow::Result<()> {
        self.admin(admin_password, "RELOAD").await.map(drop)
    }

    /// Disconnects every client and server connection of a pool (before it is removed, so that
    /// no session outlives its pool).
    pub async fn kill(&self, admin_password: &str, pool: &str) -> anyhow::Result<()> {
        // Quoted: the console takes a bare word of letters, digits and underscores only (pool
        // names have no quotes).
        self.admin(admin_password, &format!("KILL \"{pool}\"")).await.map(drop)
    }

    /// The pools PgBouncer runs, by name (its own `pgbouncer` database left out).
    pub async fn running(&self, admin_password: &str) -> anyhow::Result<BTreeMap<String, Running>> {
        let rows = self.admin(admin_password, "SHOW DATABASES").await?;
        let mut running = BTreeMap::new();
        for row in rows {
            let field = |name: &str| row.get(name).cloned().unwrap_or_default();
            let name = field("name");
            if name == "pgbouncer" {
                continue;
            }
            running.insert(
                name,
                Running {
                    host: field("host"),
                    port: field("port"),
                    database: field("database"),
                    force_user: field("force_user"),
                    pool_size: field("pool_size"),
                    pool_mode: field("pool_mode"),
                    max_connections: field("max_connections"),
                },
            );
        }
        Ok(running)
    }

    /// Stops PgBouncer at once (clients are disconnected) and removes its folder.
    pub async fn stop(mut self, admin_password: &str) {
        // SHUTDOWN ends the process, so the console's answer never comes.
        let _ = self.admin(admin_password, "SHUTDOWN").await;
        if let Some(child) = &mut self.child {
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        }
        let _ = tokio::fs::remove_dir_all(&self.dir).await;
    }

    /// Runs one admin console command; its rows as column-name maps.
    async fn admin(
        &self,
        admin_password: &str,
        command: &str,
    ) -> anyhow::Result<Vec<BTreeMap<String, String>>> {
        let exchange = async {
            let (client, connection) = tokio_postgres::Config::new()
                .host_path(&self.dir)
                .port(self.port)
                .user(ADMIN_USER)
                .password(admin_password)
                .dbname("pgbouncer")
                .connect_timeout(ADMIN_TIMEOUT)
                .connect(tokio_postgres::NoTls)
                .await?;
            let connection = tokio::spawn(connection);
            let messages = client.simple_query(command).await;
            drop(client);
            let _ = connection.await;
            let mut rows = Vec::new();
            for message in messages? {
                if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
                    let mut map = BTreeMap::new();
                    for (i, column) in row.columns().iter().enumerate() {
                        map.insert(column.name().to_string(), row.get(i).unwrap_or_default().to_string());
                    }
                    rows.push(map);
                }
            }
            Ok::<_, tokio_postgres::Error>(rows)
        };
        tokio::time::timeout(ADMIN_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow!("PgBouncer's admin console did not answer {command} in time"))?
            .map_err(|e| anyhow!("PgBouncer's admin console: {e}"))
    }
}

/// Gives `path` the mode `mode` and, when PgBouncer runs as another user, to that user.
async fn set_private(path: &Path, mode: u32, launcher: &Launcher) -> anyhow::Result<()> {
    tokio::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .await
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    if let Some((_, uid, gid)) = &launcher.run_as {
        std::os::unix::fs::chown(path, Some(*uid), Some(*gid))
            .with_context(|| format!("giving {} to PgBouncer's user", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_directory_pgbouncers_user_cannot_reach_is_refused() {
        let parent = tempfile::tempdir().unwrap();
        let run_dir = parent.path().join("pooler");
        let launcher =
            Launcher { program: "pgbouncer".into(), run_as: Some(("nobody".into(), 65534, 65534)) };
        std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let refused = launcher.check_reachable(&run_dir).unwrap_err().to_string();
        assert!(refused.contains(&parent.path().display().to_string()), "{refused}");
        std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        launcher.check_reachable(&run_dir).unwrap();
        let own = Launcher { program: "pgbouncer".into(), run_as: None };
        std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        own.check_reachable(&run_dir).unwrap();
    }
}
