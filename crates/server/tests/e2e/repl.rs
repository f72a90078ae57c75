//! `gamelake sql` as a person uses it: the REPL on a terminal (a pseudo-terminal from
//! util-linux's `script`), keys typed one burst at a time, history recalled with the up arrow
//! within a session and in the next one.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::util::{missing, BIN};

const UP: &str = "\x1b[A";
const ENTER: &str = "\r";

/// A REPL session on a pseudo-terminal; what the terminal showed accumulates in `screen`.
struct Session {
    child: Child,
    stdin: ChildStdin,
    screen: Arc<Mutex<String>>,
}

impl Session {
    fn start(data_dir: &std::path::Path, history: &std::path::Path) -> Session {
        // script(1) runs the command with `$SHELL -c`. `exec` makes the REPL the terminal's
        // foreground process itself: a shell left waiting in between would take the Ctrl-C meant
        // for a query (dash dies of it, bash does not), and the test would depend on `$SHELL`.
        let command = format!(
            "exec '{BIN}' sql --format csv --data-dir '{}'",
            data_dir.display()
        );
        let mut child = Command::new("script")
            .args(["-qfec", &command, "/dev/null"])
            .env("SHELL", "/bin/sh")
            .env("GAMELAKE_HISTORY", history)
            .env("TERM", "xterm")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("running script(1)");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let screen = Arc::new(Mutex::new(String::new()));
        let sink = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let s = Session {
            child,
            stdin,
            screen,
        };
        s.wait_for_prompt(PROMPT);
        s
    }

    fn keys(&mut self, keys: &str) {
        self.stdin.write_all(keys.as_bytes()).unwrap();
        self.stdin.flush().unwrap();
    }

    fn count(&self, needle: &str) -> usize {
        self.screen.lock().unwrap().matches(needle).count()
    }

    /// Waits until `needle` has appeared `times` times on the screen.
    fn wait_for(&self, needle: &str, times: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.count(needle) < times {
            assert!(
                Instant::now() < deadline,
                "`{needle}` not shown {times} times; screen:\n{}",
                self.screen.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the terminal's last text is `prompt`, escape sequences aside. rustyline
    /// puts the terminal in raw mode before it draws the prompt, so keys sent from then on are
    /// read by the line editor; a key sent earlier meets the terminal in cooked mode, where
    /// Ctrl-D and Ctrl-C mean something else (a lost Ctrl-D hung this test on a slow machine).
    fn wait_for_prompt(&self, prompt: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !visible(&self.screen.lock().unwrap()).ends_with(prompt) {
            assert!(
                Instant::now() < deadline,
                "no `{prompt}` prompt at the end; screen:\n{}",
                self.screen.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Ctrl-D at an empty prompt; the REPL exits 0 within a minute.
    fn leave(mut self) -> String {
        self.wait_for_prompt(PROMPT);
        self.keys("\x04");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "the REPL did not exit on Ctrl-D; screen:\n{}",
                    self.screen.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "{status}");
        let screen = self.screen.lock().unwrap().clone();
        screen
    }
}

const PROMPT: &str = "gamelake> ";
const MORE: &str = "      -> ";

/// The text of terminal output without its escape sequences and carriage returns.
fn visible(screen: &str) -> String {
    let mut out = String::with_capacity(screen.len());
    let mut chars = screen.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                // CSI: ESC [ parameters, then one final byte in @..~; other escapes: one byte.
                if chars.next_if_eq(&'[').is_some() {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

#[test]
fn sql_repl_edits_lines_and_keeps_history_across_sessions() {
    if Command::new("script").arg("--version").output().is_err() {
        return missing("script (util-linux)");
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let history = dir.path().join("state/history");

    let mut s = Session::start(&data, &history);
    s.keys(&format!("SELECT 41 + 1 AS answer;{ENTER}"));
    s.wait_for("\n42", 1);
    // The up arrow brings the statement back; Enter runs it again.
    s.wait_for_prompt(PROMPT);
    s.keys(UP);
    std::thread::sleep(Duration::from_millis(300));
    s.keys(ENTER);
    s.wait_for("\n42", 2);
    // A statement over two lines, with the cursor moved back (left arrow) to fix a typo.
    s.wait_for_prompt(PROMPT);
    s.keys(&format!("SELECT 'multi' AS x,{ENTER}"));
    s.wait_for_prompt(MORE);
    s.keys("  7 AS sven;");
    std::thread::sleep(Duration::from_millis(200));
    s.keys("\x1b[D\x1b[D\x1b[D\x1b[D");
    std::thread::sleep(Duration::from_millis(200));
    s.keys(&format!("e{ENTER}"));
    s.wait_for("x,seven", 1);
    // Ctrl-C drops the half-typed statement.
    s.wait_for_prompt(PROMPT);
    s.keys("SELECT 'dropped'");
    std::thread::sleep(Duration::from_millis(300));
    s.keys("\x03");
    s.wait_for_prompt(PROMPT);
    s.keys(&format!("SELECT 5 AS five;{ENTER}"));
    s.wait_for("\n5", 1);
    // Ctrl-C while a query runs stops the query, not the REPL.
    s.wait_for_prompt(PROMPT);
    s.keys(&format!(
        "SELECT count(*) FROM generate_series(1, 100000000000) AS t(x) WHERE x % 7 = 3;{ENTER}"
    ));
    std::thread::sleep(Duration::from_millis(1500));
    s.keys("\x03");
    s.wait_for("cancelled", 1);
    s.wait_for_prompt(PROMPT);
    s.keys(&format!("SELECT 6 AS six;{ENTER}"));
    s.wait_for("\n6", 1);
    let screen = s.leave();
    assert!(!screen.contains("\ndropped"), "{screen}");

    // The history file has each statement once (the repeat is not a new entry), multi-line
    // statements as one entry.
    let saved = std::fs::read_to_string(&history).unwrap();
    assert!(saved.contains("SELECT 41 + 1 AS answer;"), "{saved}");
    assert_eq!(saved.matches("SELECT 41 + 1").count(), 1, "{saved}");
    assert!(saved.contains("7 AS seven;"), "{saved}");
    assert!(!saved.contains("dropped"), "{saved}");

    // A new session recalls the last session's statements, newest first: `six`, the cancelled
    // query, `five`, the two-line statement (where one more up moves to its first line), then
    // `41 + 1`.
    let mut s = Session::start(&data, &history);
    for _ in 0..6 {
        s.keys(UP);
        std::thread::sleep(Duration::from_millis(200));
    }
    s.keys(ENTER);
    s.wait_for("\n42", 1);
    s.leave();
}

/// A command whose reader goes away ends quietly, as Unix tools do (`gamelake sql … | head`):
/// killed by SIGPIPE, with nothing on stderr; it used to print `error: Broken pipe` and exit
/// 1, and `gamelake jobs sql` panicked with a backtrace.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::io::BufRead;
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    for format in ["csv", "table"] {
        let mut child = Command::new(BIN)
            .args(["sql", "--format", format, "--data-dir"])
            .arg(dir.path())
            .arg("SELECT x FROM generate_series(1, 300000) AS t(x)")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(!first.is_empty());
        // The reader is gone: the pipe closes under the writer.
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGPIPE),
            "{format}: {stderr}"
        );
        assert!(stderr.is_empty(), "{format}: {stderr}");
    }
}
