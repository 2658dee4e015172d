//! `egret top`: a live full-screen view of a running egret, fed by following its output file
//! ([`follow`]): destinations per process, unit, container or pod with counts, bytes, alerts,
//! last seen and verdict ([`model`], pure), drawn with ratatui ([`draw`]). Keys change the
//! grouping, the sort column and a filter ([`View::key`]). The terminal is restored on exit,
//! on error and on panic. docs/top.md documents it.

pub mod draw;
pub mod follow;
pub mod model;

use std::{
    io,
    path::PathBuf,
    time::{Duration, Instant},
};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};

use model::{Grouping, Model, SortBy};

/// `egret top` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct TopArgs {
    /// The output file of a running `egret run --output FILE` (followed across rotation).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/var/log/egret/events.jsonl"
    )]
    pub input: PathBuf,

    /// Start with the lines in this many bytes before the end of the file (the recent past;
    /// 0: only what comes next).
    #[arg(long, value_name = "BYTES", default_value = "1048576")]
    pub history: u64,

    /// Redraw (and read the file) this often, in milliseconds.
    #[arg(long, value_name = "MS", default_value = "500",
          value_parser = clap::value_parser!(u64).range(50..=10_000))]
    pub refresh_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum TopError {
    #[error("egret top draws on a terminal, and stdout is none (for lines, use `egret run` or `egret report`)")]
    NotATerminal,
    #[error("the terminal: {0}")]
    Terminal(#[source] io::Error),
    #[error("reading {path}: {source}")]
    Read { path: String, source: io::Error },
}

/// What the person chose: grouping, sort, filter, scroll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub grouping: Grouping,
    pub sort: SortBy,
    pub ascending: bool,
    pub filter: String,
    /// Typing a filter (after `/`).
    pub editing: bool,
    /// First row shown.
    pub scroll: usize,
    /// Said in the status bar (a read error).
    pub message: Option<String>,
    /// Colours (`NO_COLOR` unset or empty).
    pub colour: bool,
}

impl Default for View {
    fn default() -> Self {
        Self {
            grouping: Grouping::Process,
            sort: SortBy::Connections,
            ascending: false,
            filter: String::new(),
            editing: false,
            scroll: 0,
            message: None,
            colour: true,
        }
    }
}

/// A key, as [`View::key`] takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Enter,
    Esc,
    Backspace,
    Up,
    Down,
    PageUp,
    PageDown,
    Home,
    /// Ctrl-C.
    Interrupt,
}

impl View {
    /// Applies a key; true when it quits.
    pub fn key(&mut self, key: Key) -> bool {
        if key == Key::Interrupt {
            return true;
        }
        if self.editing {
            match key {
                Key::Char(c) if !c.is_control() => self.filter.push(c),
                Key::Backspace => {
                    self.filter.pop();
                }
                Key::Enter => self.editing = false,
                Key::Esc => {
                    self.filter.clear();
                    self.editing = false;
                }
                _ => {}
            }
            self.scroll = 0;
            return false;
        }
        match key {
            Key::Char('q') | Key::Esc => return true,
            Key::Char('/') => {
                self.editing = true;
                self.filter.clear();
            }
            Key::Char('g') => self.grouping = self.grouping.next(),
            Key::Char('s') => self.sort = self.sort.next(),
            Key::Char('r') => self.ascending = !self.ascending,
            Key::Char(c) => {
                if let Some(sort) = SortBy::of_key(c) {
                    if self.sort == sort {
                        self.ascending = !self.ascending;
                    } else {
                        self.sort = sort;
                        self.ascending = false;
                    }
                }
            }
            Key::Up => self.scroll = self.scroll.saturating_sub(1),
            Key::Down => self.scroll = self.scroll.saturating_add(1),
            Key::PageUp => self.scroll = self.scroll.saturating_sub(20),
            Key::PageDown => self.scroll = self.scroll.saturating_add(20),
            Key::Home => self.scroll = 0,
            Key::Enter | Key::Backspace | Key::Interrupt => {}
        }
        false
    }
}

fn key_of(event: &event::KeyEvent) -> Option<Key> {
    if event.kind == KeyEventKind::Release {
        return None;
    }
    Some(match event.code {
        KeyCode::Char('c') if event.modifiers.contains(KeyModifiers::CONTROL) => Key::Interrupt,
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Enter => Key::Enter,
        KeyCode::Esc => Key::Esc,
        KeyCode::Backspace => Key::Backspace,
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::PageUp => Key::PageUp,
        KeyCode::PageDown => Key::PageDown,
        KeyCode::Home => Key::Home,
        _ => return None,
    })
}

/// The terminal in raw mode on the alternate screen; restored when dropped (ratatui's own
/// panic hook restores it on a panic too).
struct Screen(ratatui::DefaultTerminal);

impl Drop for Screen {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// Runs `egret top` until `q`.
///
/// # Errors
/// The terminal cannot be set up or drawn on, or the file cannot be read.
pub fn command(args: &TopArgs) -> Result<(), TopError> {
    let mut follower = follow::Follower::new(&args.input, args.history);
    let mut model = Model::default();
    let mut view = View {
        // no-color.org: set and not empty turns colour off.
        colour: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        ..View::default()
    };
    let input = args.input.display().to_string();
    let refresh = Duration::from_millis(args.refresh_ms);
    if !io::IsTerminal::is_terminal(&io::stdout()) {
        return Err(TopError::NotATerminal);
    }
    let terminal = ratatui::try_init().map_err(|err| {
        // Raw mode may be on already.
        ratatui::restore();
        TopError::Terminal(err)
    })?;
    let mut screen = Screen(terminal);
    loop {
        read(&mut follower, &mut model, &mut view, &input)?;
        screen
            .0
            .draw(|f| draw::frame(f, &model, &view, &input))
            .map_err(TopError::Terminal)?;
        let deadline = Instant::now() + refresh;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if !event::poll(left).map_err(TopError::Terminal)? {
                break;
            }
            if let Event::Key(key) = event::read().map_err(TopError::Terminal)? {
                if key_of(&key).is_some_and(|k| view.key(k)) {
                    return Ok(());
                }
                screen
                    .0
                    .draw(|f| draw::frame(f, &model, &view, &input))
                    .map_err(TopError::Terminal)?;
            }
        }
    }
}

/// Reads what the file has new into the model; says in the status bar when it is missing.
fn read(
    follower: &mut follow::Follower,
    model: &mut Model,
    view: &mut View,
    input: &str,
) -> Result<(), TopError> {
    follower
        .poll(&mut |line| model.ingest(line))
        .map_err(|source| TopError::Read {
            path: input.to_owned(),
            source,
        })?;
    view.message = if !follower.is_open() {
        Some(format!("waiting for {input}"))
    } else if follower.too_long > 0 {
        Some(format!("{} line(s) too long skipped", follower.too_long))
    } else {
        model.last_error.clone()
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_change_grouping_sort_and_filter_and_quit() {
        let mut v = View::default();
        assert!(!v.key(Key::Char('g')));
        assert_eq!(v.grouping, Grouping::Unit);
        v.key(Key::Char('b'));
        assert_eq!((v.sort, v.ascending), (SortBy::Bytes, false));
        v.key(Key::Char('b'));
        assert_eq!((v.sort, v.ascending), (SortBy::Bytes, true));
        v.key(Key::Char('s'));
        assert_eq!(v.sort, SortBy::LastSeen);
        v.key(Key::Char('r'));
        assert!(!v.ascending);
        // A filter: `/`, text (keys that would quit or sort are text here), Enter.
        v.key(Key::Char('/'));
        for c in "qg.com".chars() {
            assert!(!v.key(Key::Char(c)));
        }
        v.key(Key::Backspace);
        v.key(Key::Enter);
        assert_eq!(v.filter, "qg.co");
        assert!(!v.editing);
        assert_eq!(v.grouping, Grouping::Unit);
        // Esc while typing clears it.
        v.key(Key::Char('/'));
        v.key(Key::Char('x'));
        v.key(Key::Esc);
        assert_eq!((v.filter.as_str(), v.editing), ("", false));
        v.key(Key::Down);
        v.key(Key::Down);
        v.key(Key::Up);
        assert_eq!(v.scroll, 1);
        assert!(v.key(Key::Char('q')));
        assert!(View::default().key(Key::Esc));
        let mut typing = View::default();
        typing.key(Key::Char('/'));
        assert!(typing.key(Key::Interrupt));
    }
}
