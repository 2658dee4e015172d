//! Where lines go: stdout or a file (appended), buffered and flushed at least every second by
//! the agent loop and on shutdown.

use std::{
    fs::OpenOptions,
    io::{self, BufWriter, Write},
    path::PathBuf,
};

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("opening output file {path}: {source}")]
    Open { path: String, source: io::Error },
    #[error("writing to {target}: {source}")]
    Write { target: String, source: io::Error },
}

/// A line-oriented JSON sink.
pub struct Sink {
    target: String,
    out: BufWriter<Box<dyn Write + Send>>,
}

impl Sink {
    /// `-` is stdout; anything else is a file, created if missing and appended to.
    pub fn open(path: &str) -> Result<Self, OutputError> {
        let out: Box<dyn Write + Send> = if path == "-" {
            Box::new(io::stdout())
        } else {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(PathBuf::from(path))
                .map_err(|source| OutputError::Open {
                    path: path.to_owned(),
                    source,
                })?;
            Box::new(file)
        };
        let target = if path == "-" {
            "stdout".to_owned()
        } else {
            path.to_owned()
        };
        Ok(Self {
            target,
            out: BufWriter::with_capacity(256 * 1024, out),
        })
    }

    /// Writes one JSON object and a newline.
    pub fn write_line(&mut self, doc: &impl Serialize) -> Result<(), OutputError> {
        serde_json::to_writer(&mut self.out, doc)
            .map_err(io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|source| OutputError::Write {
                target: self.target.clone(),
                source,
            })
    }

    pub fn flush(&mut self) -> Result<(), OutputError> {
        self.out.flush().map_err(|source| OutputError::Write {
            target: self.target.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_lines_to_a_file() {
        let dir = std::env::temp_dir().join(format!("egret-output-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.jsonl");
        std::fs::write(&path, "{\"old\":1}\n").unwrap();
        let mut sink = Sink::open(path.to_str().unwrap()).unwrap();
        sink.write_line(&serde_json::json!({"a": 1})).unwrap();
        sink.write_line(&serde_json::json!({"b": "x"})).unwrap();
        sink.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "{\"old\":1}\n{\"a\":1}\n{\"b\":\"x\"}\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_the_file_it_cannot_open() {
        let err = Sink::open("/nonexistent-dir/x.jsonl").err().unwrap();
        assert!(
            err.to_string().contains("/nonexistent-dir/x.jsonl"),
            "{err}"
        );
    }
}
