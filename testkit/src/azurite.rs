//! A real Azurite blob service for tests (no mocks of the blob API), and its queue service
//! ([`AzuriteQueue`]) for the queue-triggered functions.
//!
//! Finding the binary: `$AZURITE_BIN`, else `<repo>/node_modules/.bin/azurite-blob`, else
//! `<repo>/.azurite-npm/node_modules/.bin/azurite-blob`, installed there on first use with
//! `npm install azurite@3.37.0` under an `flock` so parallel test binaries install it once.
//!
//! Each instance listens on a free loopback port with its own temporary workspace. Azurite runs
//! under a small `sh` guard that kills it when our end of the guard's stdin closes: on `Drop`,
//! and also when the test process exits without dropping (a `static` shared instance), so no
//! Azurite outlives the tests.

use std::io::Read as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cdc_copy::config::{StorageAccount, DEV_ACCOUNT, DEV_ACCOUNT_KEY};
use cdc_copy::sink::blob::BlobTarget;

/// The Azurite release the tests are written against.
pub const AZURITE_VERSION: &str = "3.37.0";

pub struct Azurite {
    pub blob_port: u16,
    pub connection_string: String,
    guard: Child,
    guard_stdin: Option<ChildStdin>,
    workspace: tempfile::TempDir,
}

impl Azurite {
    /// Starts a fresh Azurite on a free port and waits until it accepts connections.
    pub fn start() -> Azurite {
        let bin = azurite_bin();
        let mut last_err = String::new();
        for _ in 0..3 {
            match try_start(&bin) {
                Ok(a) => return a,
                Err(e) => last_err = e,
            }
        }
        panic!("could not start Azurite ({}): {last_err}", bin.display());
    }

    /// One Azurite shared by all tests of a test binary (use a container per test).
    pub fn shared() -> &'static Azurite {
        static SHARED: OnceLock<Azurite> = OnceLock::new();
        SHARED.get_or_init(Azurite::start)
    }

    pub fn blob_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{DEV_ACCOUNT}", self.blob_port)
    }

    pub fn settings(&self) -> StorageAccount {
        StorageAccount::from_connection_string(&self.connection_string)
            .expect("valid Azurite connection string")
    }

    /// A target for `container` (not created yet; call `ensure_container`).
    pub fn target(&self, container: &str) -> BlobTarget {
        BlobTarget::new(&self.settings(), container).expect("valid Azurite settings")
    }

    /// What Azurite printed so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.workspace.path().join("azurite.log")).unwrap_or_default()
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        // Closing the guard's stdin makes it stop Azurite and exit.
        stop_guard(&mut self.guard, self.guard_stdin.take());
    }
}

/// A container name unique within this machine's test runs: `prefix` + pid + counter.
pub fn unique_container(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A loopback port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// The account-key connection string for an Azurite on `port`.
pub fn connection_string(port: u16) -> String {
    format!(
        "DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_ACCOUNT_KEY};\
         BlobEndpoint=http://127.0.0.1:{port}/{DEV_ACCOUNT};"
    )
}

/// The workspace root (this crate's parent folder), where `.azurite-npm` is installed.
fn repo_root() -> PathBuf {
    let testkit = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    testkit.parent().map(PathBuf::from).unwrap_or(testkit)
}

fn azurite_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("AZURITE_BIN") {
            return PathBuf::from(bin);
        }
        let local = repo_root().join("node_modules/.bin/azurite-blob");
        if local.exists() {
            return local;
        }
        let prefix = repo_root().join(".azurite-npm");
        let bin = prefix.join("node_modules/.bin/azurite-blob");
        if !bin.exists() {
            install(&prefix, &bin);
        }
        bin
    })
    .clone()
}

/// `npm install` under an exclusive `flock`, re-checking inside the lock.
fn install(prefix: &Path, bin: &Path) {
    std::fs::create_dir_all(prefix).expect("create the Azurite npm prefix");
    let lock = prefix.join(".install.lock");
    let script = format!(
        "test -x '{bin}' || npm install --no-save --no-audit --no-fund --loglevel=error \
         --prefix '{prefix}' azurite@{AZURITE_VERSION}",
        bin = bin.display(),
        prefix = prefix.display()
    );
    let out = Command::new("flock")
        .arg(&lock)
        .args(["sh", "-c", &script])
        .output()
        .expect("run flock + npm (are util-linux and npm installed?)");
    assert!(
        out.status.success() && bin.exists(),
        "installing Azurite failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn try_start(bin: &Path) -> Result<Azurite, String> {
    let workspace = tempfile::tempdir().map_err(|e| e.to_string())?;
    let port = free_port();
    let (guard, guard_stdin) = spawn_guarded(
        bin,
        &["--blobHost", "127.0.0.1", "--blobPort"],
        port,
        &workspace,
    )?;
    Ok(Azurite {
        blob_port: port,
        connection_string: connection_string(port),
        guard,
        guard_stdin,
        workspace,
    })
}

/// Starts `bin` with `args` + `port` in `workspace` under the stdin guard (see the module
/// doc) and waits until it listens.
fn spawn_guarded(
    bin: &Path,
    args: &[&str],
    port: u16,
    workspace: &tempfile::TempDir,
) -> Result<(Child, Option<ChildStdin>), String> {
    let log =
        std::fs::File::create(workspace.path().join("azurite.log")).map_err(|e| e.to_string())?;
    // The guard runs Azurite in the background and stops it once its stdin reaches EOF.
    let guard_script = r#""$0" "$@" </dev/null & child=$!
read _ignored
kill $child 2>/dev/null
wait $child"#;
    let mut guard = Command::new("sh")
        .arg("-c")
        .arg(guard_script)
        .arg(bin)
        .args(args)
        .arg(port.to_string())
        .arg("--location")
        .arg(workspace.path())
        .args(["--silent", "--loose", "--disableTelemetry"])
        .stdin(Stdio::piped())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("spawn sh: {e}"))?;
    let guard_stdin = guard.stdin.take();

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        if let Ok(Some(status)) = guard.try_wait() {
            let mut text = String::new();
            let _ = std::fs::File::open(workspace.path().join("azurite.log"))
                .and_then(|mut f| f.read_to_string(&mut text));
            return Err(format!("Azurite exited ({status}): {text}"));
        }
        if Instant::now() > deadline {
            drop(guard_stdin);
            let _ = guard.kill();
            let _ = guard.wait();
            return Err(format!("Azurite did not listen on port {port} within 60 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((guard, guard_stdin))
}

/// Closes the guard's stdin (it then stops Azurite and exits), waiting up to 10 s.
fn stop_guard(guard: &mut Child, stdin: Option<ChildStdin>) {
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = guard.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = guard.kill();
    let _ = guard.wait();
}

/// A real Azurite queue service (`azurite-queue`, shipped in the same npm package as
/// `azurite-blob` and found next to it), for the queue-triggered functions: the host
/// stand-in of [`crate::queue`] reads and writes its messages.
pub struct AzuriteQueue {
    pub port: u16,
    guard: Child,
    guard_stdin: Option<ChildStdin>,
    _workspace: tempfile::TempDir,
}

impl AzuriteQueue {
    /// Starts a fresh queue service on a free port and waits until it accepts connections.
    pub fn start() -> AzuriteQueue {
        let bin = queue_bin();
        let mut last_err = String::new();
        for _ in 0..3 {
            let workspace = tempfile::tempdir().expect("temp dir");
            let port = free_port();
            match spawn_guarded(
                &bin,
                &["--queueHost", "127.0.0.1", "--queuePort"],
                port,
                &workspace,
            ) {
                Ok((guard, guard_stdin)) => {
                    return AzuriteQueue {
                        port,
                        guard,
                        guard_stdin,
                        _workspace: workspace,
                    }
                }
                Err(e) => last_err = e,
            }
        }
        panic!(
            "could not start Azurite's queue service ({}): {last_err}",
            bin.display()
        );
    }

    /// One queue service shared by all tests of a test binary (use queues of their own).
    pub fn shared() -> &'static AzuriteQueue {
        static SHARED: OnceLock<AzuriteQueue> = OnceLock::new();
        SHARED.get_or_init(AzuriteQueue::start)
    }

    /// `http://127.0.0.1:<port>/devstoreaccount1`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{DEV_ACCOUNT}", self.port)
    }

    /// A client signed with the development account's key.
    pub fn client(&self) -> crate::queue::QueueClient {
        crate::queue::QueueClient::dev_account(&self.endpoint())
    }
}

impl Drop for AzuriteQueue {
    fn drop(&mut self) {
        stop_guard(&mut self.guard, self.guard_stdin.take());
    }
}

/// `azurite-queue`, beside the `azurite-blob` the blob harness found (or installed).
fn queue_bin() -> PathBuf {
    let blob = azurite_bin();
    let name = blob
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("azurite-blob")
        .replace("azurite-blob", "azurite-queue");
    blob.with_file_name(name)
}
