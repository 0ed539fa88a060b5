//! Programs a test starts: killed when the test ends, also when it fails, so a failed
//! assertion never leaves a server running (and holding the test's output pipes).

use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::Duration;

/// A child process that is killed and reaped when dropped.
pub struct Process(Child);

impl std::ops::Deref for Process {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Process {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command` with its standard output read line by line; standard error goes where
/// the command says (the test's own output unless it was set).
pub fn spawn_lines(command: &mut Command) -> (Process, Lines<BufReader<ChildStdout>>) {
    let mut child = Process(
        command
            .stdout(Stdio::piped())
            .spawn()
            .expect("the program starts"),
    );
    let stdout = child.0.stdout.take().expect("stdout is piped");
    (child, BufReader::new(stdout).lines())
}

/// Sends `signal` (such as `-TERM` or `-KILL`) to the process.
pub fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {signal} {}", child.id());
}

/// Sends SIGTERM and waits for the process to exit; fails the test if it takes over 10 s.
pub fn terminate(child: &mut Child) -> ExitStatus {
    signal(child, "-TERM");
    for _ in 0..100 {
        if let Some(status) = child.try_wait().expect("the child can be waited for") {
            return status;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    panic!("the process did not stop within 10 s of SIGTERM");
}
