//! The terminal while `call` and `listen` run: keys in, lines out.
//!
//! When stdin is a terminal it is put in raw mode for the whole command, so
//! single keys work at every moment (`q` while waiting or ringing, `y`/`n`
//! at a prompt, `i` to invite during a call), and a thread turns key
//! presses into [`Key`]s. Ctrl-C arrives as a key in raw mode; without a
//! terminal, SIGINT is turned into the same [`Key::Interrupt`], so every
//! loop has one place to hear "stop". Raw mode does not turn `\n` into a
//! new line, so everything printed meanwhile goes through [`say`].

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

static STDERR_TTY: OnceLock<bool> = OnceLock::new();

/// Records whether stderr is a terminal before anything redirects it (the
/// ALSA filter puts a pipe there).
pub fn remember_stderr() {
    let _ = STDERR_TTY.set(std::io::stderr().is_terminal());
}

/// Whether stderr is (was, at start) a terminal.
pub fn stderr_is_terminal() -> bool {
    *STDERR_TTY.get_or_init(|| std::io::stderr().is_terminal())
}

/// Prints a line for the person at the terminal on stderr, over whatever
/// status line was there, in raw mode or not.
pub fn say(msg: &str) {
    let mut err = std::io::stderr().lock();
    if stderr_is_terminal() {
        let _ = write!(err, "\r\x1b[K{}\r\n", msg.replace('\n', "\r\n"));
    } else {
        let _ = writeln!(err, "{msg}");
    }
    let _ = err.flush();
}

/// Replaces the status line (no new line; cleared to the end).
pub fn status(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[K{line}");
    let _ = err.flush();
}

/// The terminal's width in columns (80 when it cannot be asked).
pub fn width() -> usize {
    crossterm::terminal::size().map_or(80, |(w, _)| usize::from(w.max(20)))
}

/// SIGINT (Ctrl-C without raw mode), heard from the moment this is made:
/// the process no longer dies of it from then on.
#[derive(Debug)]
pub struct Interrupts {
    #[cfg(unix)]
    sig: Option<tokio::signal::unix::Signal>,
}

impl Interrupts {
    /// Starts listening (in a Tokio runtime).
    pub fn new() -> Interrupts {
        #[cfg(unix)]
        {
            Interrupts { sig: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok() }
        }
        #[cfg(not(unix))]
        {
            Interrupts {}
        }
    }

    /// Waits for the next one; `false` when none can come any more.
    pub async fn next(&mut self) -> bool {
        #[cfg(unix)]
        if let Some(sig) = self.sig.as_mut() {
            return sig.recv().await.is_some();
        }
        tokio::signal::ctrl_c().await.is_ok()
    }
}

/// What the person did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// `q`.
    Quit,
    /// Ctrl-C, or SIGINT without a terminal.
    Interrupt,
    /// Enter.
    Enter,
    /// Escape.
    Escape,
    /// Backspace.
    Backspace,
    /// Any other character.
    Char(char),
}

/// Keys from the terminal and Ctrl-C, for one command's lifetime.
#[derive(Debug)]
pub struct Input {
    rx: mpsc::UnboundedReceiver<Key>,
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    signal: tokio::task::JoinHandle<()>,
    raw: bool,
}

impl Input {
    /// Starts listening: raw mode and a key thread when stdin is a
    /// terminal, SIGINT in any case.
    pub fn start() -> Input {
        let (tx, rx) = mpsc::unbounded_channel();
        let done = Arc::new(AtomicBool::new(false));
        let sig_tx = tx.clone();
        // Listening from now, not from the task's first poll: a Ctrl-C
        // right after (a call that has just started ringing) is heard too.
        let mut interrupts = Interrupts::new();
        let signal = tokio::spawn(async move {
            while interrupts.next().await {
                if sig_tx.send(Key::Interrupt).is_err() {
                    return;
                }
            }
        });
        let raw = std::io::stdin().is_terminal() && crossterm::terminal::enable_raw_mode().is_ok();
        let thread = raw.then(|| {
            let flag = done.clone();
            std::thread::spawn(move || key_thread(&flag, &tx))
        });
        Input { rx, done, thread, signal, raw }
    }

    /// Whether a person can press keys (stdin is a terminal).
    pub fn interactive(&self) -> bool {
        self.raw
    }

    /// The next key; pends forever when there will be none.
    pub async fn next(&mut self) -> Key {
        match self.rx.recv().await {
            Some(k) => k,
            None => std::future::pending().await,
        }
    }
}

fn key_thread(done: &AtomicBool, tx: &mpsc::UnboundedSender<Key>) {
    use crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, poll, read};
    while !done.load(Ordering::SeqCst) {
        if !poll(Duration::from_millis(100)).unwrap_or(false) {
            continue;
        }
        let Ok(Event::Key(KeyEvent { code, modifiers, kind, .. })) = read() else { continue };
        if kind == KeyEventKind::Release {
            continue;
        }
        let key = match code {
            KeyCode::Char('c') | KeyCode::Char('d') if modifiers.contains(KeyModifiers::CONTROL) => Key::Interrupt,
            KeyCode::Char(c) => Key::Char(c),
            KeyCode::Enter => Key::Enter,
            KeyCode::Esc => Key::Escape,
            KeyCode::Backspace => Key::Backspace,
            _ => continue,
        };
        let key = if matches!(key, Key::Char('q') | Key::Char('Q')) { Key::Quit } else { key };
        if tx.send(key).is_err() {
            return;
        }
    }
}

impl Drop for Input {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        self.signal.abort();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if self.raw {
            let _ = crossterm::terminal::disable_raw_mode();
        }
    }
}

/// What to say when the event stream is back, naming the server it is on
/// (of a cluster's list, the node it moved to).
pub fn connected_again(events: &babel_client::EventStream) -> String {
    match events.server().borrow().as_ref() {
        Some(node) => format!("babel: connected to the server again ({node})"),
        None => "babel: connected to the server again".to_owned(),
    }
}
