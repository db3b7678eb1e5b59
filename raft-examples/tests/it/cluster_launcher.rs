//! The `cluster` launcher: it starts three nodes that serve, shows them in its table
//! (with the leader's view of their lag and their log-write p99), stops them all cleanly
//! on SIGINT, and a second run restarts them from the same data.

use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{request, wait_until, PATIENCE};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const CLUSTER: &str = env!("CARGO_BIN_EXE_cluster");

/// A base port whose eight ports (base + 1..=4 and base + 1001..=1004) are free now.
fn free_base_port() -> u16 {
    for _ in 0..200 {
        let base = 10_000 + fastrand_u16() % 20_000;
        let ports = [1, 2, 3, 4, 1001, 1002, 1003, 1004].map(|o| base + o);
        if ports.iter().all(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok()) {
            return base;
        }
    }
    panic!("no free base port found");
}

fn fastrand_u16() -> u16 {
    // Good enough to spread parallel runs: the clock's low bits and the process id.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    (nanos ^ (std::process::id() << 7)) as u16
}

/// The launcher's process and what it has printed so far.
struct Launcher(Child, Arc<Mutex<String>>);

impl Launcher {
    /// Its output so far.
    fn output(&self) -> String {
        self.1.lock().expect("output lock").clone()
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        // On a failed assertion: stop the launcher, which stops its nodes.
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(15);
            while self.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn launch(data: &std::path::Path, base: u16) -> Launcher {
    launch_with(data, base, &[])
}

fn launch_with(data: &std::path::Path, base: u16, extra: &[&str]) -> Launcher {
    let child = Command::new(CLUSTER)
        .args(["kv", "--no-build", "--base-port", &base.to_string()])
        .args(extra)
        .arg("--data-dir")
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the launcher");
    let mut child = child;
    let mut stdout = child.stdout.take().expect("the launcher's stdout");
    let output = Arc::new(Mutex::new(String::new()));
    let sink = output.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stdout.read(&mut buf) {
            sink.lock().expect("output lock").push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    Launcher(child, output)
}

/// The cells of the last table row of each node in `output` (the table is printed
/// again whenever it changes, stdout not being a terminal).
fn last_rows(output: &str, http: &[String]) -> Vec<Vec<String>> {
    http.iter()
        .map(|h| {
            let url = format!("http://{h}");
            let row = output.lines().rev().find(|l| l.split_whitespace().nth(1) == Some(url.as_str()));
            row.map(|l| l.split_whitespace().map(String::from).collect()).unwrap_or_default()
        })
        .collect()
}

/// Waits until the table shows a leader (lag `-`), followers at lag 0 (they have caught
/// up), and a log-write p99 with its unit on some node, calling `write` meanwhile (the
/// p99 covers one refresh interval: it needs writes between two refreshes).
fn wait_for_the_table(l: &Launcher, http: &[String], mut write: impl FnMut()) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let output = l.output();
        let rows = last_rows(&output, http);
        // node, http, role, term, leader, commit, applied, lag, p99 (`-` or value and
        // unit), pid.
        let lag = |r: &Vec<String>| r.get(7).cloned().unwrap_or_default();
        let leaders = rows.iter().filter(|r| r.get(2).is_some_and(|x| x == "leader") && lag(r) == "-").count();
        let followers = rows.iter().filter(|r| r.get(2).is_some_and(|x| x == "follower") && lag(r) == "0").count();
        let with_p99 = output.lines().any(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells.len() == 11 && ["µs", "ms", "s"].contains(&cells[9])
        });
        if leaders == 1 && followers == 2 && with_p99 {
            break;
        }
        assert!(Instant::now() < deadline, "the table shows no lag or log-write p99 after {PATIENCE:?}:\n{output}");
        write();
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = l.output();
    assert!(output.contains("lag  fsync p99"), "no lag and fsync p99 columns:\n{output}");
}

/// Stops the launcher with SIGINT (as Ctrl-C does) and checks that it and its nodes end.
fn stop(mut l: Launcher, http: &[String]) {
    kill(Pid::from_raw(l.0.id() as i32), Signal::SIGINT).expect("SIGINT");
    let status = wait_until("the launcher to exit", PATIENCE, || l.0.try_wait().expect("wait"));
    assert!(status.success(), "launcher exited with {status}");
    for h in http {
        assert!(std::net::TcpStream::connect(h.as_str()).is_err(), "a node still serves on {h}");
    }
}

#[test]
fn launcher_runs_three_nodes_stops_them_on_sigint_and_reuses_the_data() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let base = free_base_port();
    let http: Vec<String> = (1..=3).map(|i| format!("127.0.0.1:{}", base + 1000 + i)).collect();
    let agent = crate::support::client();
    let put = |node: usize, key: &str, value: &str| {
        wait_until("a write through the launched cluster", PATIENCE, || {
            let r = request(&agent, "PUT", &format!("http://{}/kv/{key}", http[node]), Some(value.as_bytes()));
            (r.status == 200).then_some(())
        })
    };
    let get = |node: usize, key: &str| {
        wait_until("a read through the launched cluster", PATIENCE, || {
            let r = request(&agent, "GET", &format!("http://{}/kv/{key}", http[node]), None);
            (r.status == 200 || r.status == 404).then(|| r.text())
        })
    };

    let l = launch(tmp.path(), base);
    put(0, "launched", "first run");
    assert_eq!(get(1, "launched"), "first run");
    wait_for_the_table(&l, &http, || put(1, "again", "and again"));
    stop(l, &http);
    assert!(tmp.path().join("kv/node-1").is_dir() && tmp.path().join("kv/node-3.log").is_file());

    let l = launch(tmp.path(), base);
    assert_eq!(get(2, "launched"), "first run", "the second run lost the first run's data");
    stop(l, &http);
}

/// `cluster add --tls` on a launcher's TLS cluster: the fourth node starts with the
/// certificate the launcher made for its id, joins, and becomes a voter; the admin
/// requests and the new node's API are HTTPS.
#[test]
fn cluster_add_grows_a_tls_cluster_by_a_voter() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let base = free_base_port();
    let l = launch_with(tmp.path(), base, &["--tls"]);
    let ca = tmp.path().join("kv/tls/ca.pem");
    let pem = wait_until("the launcher's CA", PATIENCE, || std::fs::read(&ca).ok());
    let trust = raft_examples::launch::client::HttpsTrust::from_ca_pem(&pem).expect("trust");
    let https = |node: u16, method: &str, path: &str| {
        let addr = format!("127.0.0.1:{}", base + 1000 + node);
        raft_examples::launch::client::request_with(Some(&trust), &addr, method, path, None, Duration::from_secs(2))
    };
    wait_until("a leader on the TLS cluster", PATIENCE, || {
        let r = https(1, "GET", "/cluster");
        (r.status == 200 && serde_json::from_slice::<serde_json::Value>(&r.body).ok()?["leader"].is_u64()).then_some(())
    });

    let out = Command::new(CLUSTER)
        .args(["add", "kv", "--tls", "--no-build", "--base-port", &base.to_string(), "--data-dir"])
        .arg(tmp.path())
        .output()
        .expect("cluster add runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let pid = stdout.split("(pid ").nth(1).and_then(|rest| rest.split(')').next()).and_then(|p| p.parse::<i32>().ok());
    let stop_four = || {
        if let Some(pid) = pid {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    };
    if !out.status.success() {
        stop_four();
        panic!("cluster add failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let shown = wait_until("four voters", PATIENCE, || {
        let r = https(4, "GET", "/cluster");
        let v: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
        (v["voters"] == serde_json::json!([1, 2, 3, 4])).then_some(v)
    });
    stop_four();
    assert!(shown["learners"].as_array().is_some_and(Vec::is_empty), "{shown}");
    assert!(stdout.contains("POST /cluster/voters"), "{stdout}");
    drop(l);
}
