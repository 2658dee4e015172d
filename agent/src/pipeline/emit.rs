//! The emit stage: the one way a line leaves egret.
//!
//! Every stage that has something to say hands the [`Emitter`] a [`Line`]: what happened, with
//! borrowed facts. The emitter numbers it (`event.sequence`), renders it as an ECS document
//! (`crate::ecs`, the [`crate::schema`] types), writes it to the output (and alert lines also to `--alerts`), counts it for
//! the metric line and for Prometheus, and counts a line that could not be written as dropped.
//! Nothing else holds a sink. With `--format text` the main output gets the same document
//! rendered as text ([`crate::ecs::text`]) instead; `--alerts` and syslog keep JSON.

use serde_json::value::RawValue;

use crate::{
    baseline::{spikes::Spike, Destination, Workload},
    clock::WallClock,
    conn::ConnEnd,
    dns::state::Answer,
    ecs::{
        self,
        text::{self, Style},
        writer::{self, Facts},
        EndLine, ProcessJson, Stamp,
    },
    metrics::{Metrics, Telemetry},
    output::{self, journal::Journal, OutputError, Sink},
    process::ProcessInfo,
    record::ConnectionRecord,
    schema::Document,
    udp::UdpSummary,
};

/// One line to write.
#[derive(Debug, Clone, Copy)]
pub enum Line<'a> {
    /// A `connect` line, or a UDP flow's `send` line (with the flow's summary).
    Connection {
        record: &'a ConnectionRecord,
        udp: Option<UdpSummary>,
    },
    /// A TCP connection's `connection-end` line.
    End {
        record: &'a ConnectionRecord,
        facts: &'a ConnEnd,
        /// False when egret never saw the start (older than egret, or forgotten).
        start_seen: bool,
        /// Its `connect` line was not written: this line is its start too
        /// (`--merge-short-connections`).
        with_start: bool,
    },
    /// A `connection-progress` line of a TCP connection still open.
    Progress {
        record: &'a ConnectionRecord,
        facts: &'a ConnEnd,
    },
    /// An alert about an unapproved or blocked destination, `repeats` folded into it.
    Alert {
        record: &'a ConnectionRecord,
        repeats: u64,
        window_secs: u64,
    },
    /// An alert about a process whose connects to one destination keep failing.
    FailureAlert {
        record: &'a ConnectionRecord,
        count: u64,
        window_secs: u64,
        error: Option<u32>,
    },
    /// A workload reached a destination new to its baseline.
    NewDestination {
        record: &'a ConnectionRecord,
        workload: &'a Workload,
        destination: &'a Destination,
    },
    /// A burst of connection failures and HTTP errors from a workload to one destination.
    Spike {
        record: &'a ConnectionRecord,
        workload: &'a Workload,
        destination: &'a Destination,
        spike: &'a Spike,
        window_secs: u64,
    },
    /// A `dns` line (`--dns-events`): one answer, and the process that asked, if known.
    Dns {
        answer: &'a Answer,
        asker: Option<&'a ProcessInfo>,
    },
    /// The `metric` line: every counter (its own line is counted in `lines_written`).
    Metric(&'a Metrics),
}

/// What the emitter counted; part of every metric line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EmitStats {
    /// Lines written (events, alerts and metric lines).
    pub lines_written: u64,
    /// Writes and flushes that failed, on any sink.
    pub write_errors: u64,
    /// Lines lost because the output refused them.
    pub dropped: u64,
    /// Policy alert lines written.
    pub alerts: u64,
    /// Repeated-failure alert lines written.
    pub failure_alerts: u64,
    /// `new-destination` alert lines written.
    pub new_destination_alerts: u64,
    /// `spike` alert lines written.
    pub spike_alerts: u64,
    /// `connection-end` lines written.
    pub tcp_connection_ends: u64,
}

/// The sinks, and what is counted as lines go out.
struct Outputs {
    sink: Sink,
    alert_sink: Option<Sink>,
    /// `--format text`: the main output's lines as text, in this style.
    text: Option<Style>,
    /// `--journal`: alert lines also go to journald with structured fields.
    journal: Option<Journal>,
    telemetry: Telemetry,
    stats: EmitStats,
}

/// Owns the output: sinks, sequence numbers, the wall clock, the host name, rendered
/// `process` objects, and the counters of what was written.
pub struct Emitter {
    outputs: Outputs,
    sequence: u64,
    clock: WallClock,
    host_name: String,
    /// `process` objects rendered once for repeated lines of the same process.
    process_json: ProcessJson,
}

impl Emitter {
    /// `alert_sink`: `--alerts`, which gets alert lines too.
    pub fn new(sink: Sink, alert_sink: Option<Sink>, telemetry: Telemetry) -> Self {
        Self {
            outputs: Outputs {
                sink,
                alert_sink,
                text: None,
                journal: None,
                telemetry,
                stats: EmitStats::default(),
            },
            sequence: 0,
            clock: WallClock::new(),
            host_name: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            process_json: ProcessJson::default(),
        }
    }

    /// Writes the main output's lines as text (`--format text`) in `style`, after a header
    /// line naming the columns. Only for stdout: a file keeps JSON whatever this says.
    #[must_use]
    pub fn with_text(mut self, style: Style) -> Self {
        self.outputs.text = Some(style);
        if let Err(err) = self.outputs.sink.write_header(&text::header(style)) {
            log::error!("{err}");
        }
        self
    }

    /// `--journal`: alert lines also go to `journal` (an alert it does not take counts as a
    /// write error, not a dropped line: the output has it).
    #[must_use]
    pub fn with_journal(mut self, journal: Option<Journal>) -> Self {
        self.outputs.journal = journal;
        self
    }

    pub fn stats(&self) -> EmitStats {
        self.outputs.stats
    }

    /// Bytes of lines the output files have not taken yet.
    pub fn backlog(&self) -> usize {
        self.outputs.sink.backlog() + self.outputs.alert_sink.as_ref().map_or(0, Sink::backlog)
    }

    pub fn telemetry(&mut self) -> &mut Telemetry {
        &mut self.outputs.telemetry
    }

    /// Writes one line. Returns whether the output took it (a refused line is counted as
    /// dropped, and its failure logged once per power of two so a full disk does not flood
    /// the log).
    pub fn emit(&mut self, line: Line<'_>) -> bool {
        self.sequence += 1;
        let Self {
            outputs,
            sequence,
            clock,
            host_name,
            process_json,
        } = self;
        let stamp = Stamp {
            sequence: *sequence,
            clock,
            host_name,
        };
        let kind = line.kind();
        // Each document is written where it is built: a line is large, and is not moved.
        // Connection lines, most of what egret writes, go straight from the record to bytes.
        let written = match line {
            Line::Connection { record, udp } => {
                let rendered = process_json.get(record, clock);
                let facts = Facts::Start { udp };
                outputs.deliver_record(record, facts, stamp, rendered, kind)
            }
            Line::End {
                record,
                facts,
                start_seen,
                with_start,
            } => {
                let rendered = process_json.get(record, clock);
                let facts = Facts::End {
                    end: facts,
                    start_seen,
                    kind: if with_start {
                        EndLine::StartAndEnd
                    } else {
                        EndLine::End
                    },
                };
                outputs.deliver_record(record, facts, stamp, rendered, kind)
            }
            Line::Progress { record, facts } => {
                let rendered = process_json.get(record, clock);
                let facts = Facts::End {
                    end: facts,
                    start_seen: true,
                    kind: EndLine::Progress,
                };
                outputs.deliver_record(record, facts, stamp, rendered, kind)
            }
            Line::Alert {
                record,
                repeats,
                window_secs,
            } => outputs.deliver(&ecs::alert(record, repeats, window_secs, stamp), kind),
            Line::FailureAlert {
                record,
                count,
                window_secs,
                error,
            } => {
                let doc = ecs::failure_alert(record, count, window_secs, error, stamp);
                outputs.deliver(&doc, kind)
            }
            Line::NewDestination {
                record,
                workload,
                destination,
            } => {
                let doc = ecs::baseline::new_destination(record, workload, destination, stamp);
                outputs.deliver(&doc, kind)
            }
            Line::Spike {
                record,
                workload,
                destination,
                spike,
                window_secs,
            } => {
                let doc =
                    ecs::baseline::spike(record, workload, destination, spike, window_secs, stamp);
                outputs.deliver(&doc, kind)
            }
            Line::Dns { answer, asker } => outputs.deliver(&ecs::dns(answer, asker, stamp), kind),
            Line::Metric(metrics) => {
                // The metric line counts itself in `lines_written`.
                let metrics = Metrics {
                    lines_written: outputs.stats.lines_written + 1,
                    ..*metrics
                };
                outputs.deliver(&ecs::metric(&metrics, stamp), kind)
            }
        };
        let stats = &mut outputs.stats;
        match kind {
            Kind::End if written => stats.tcp_connection_ends += 1,
            Kind::Alert if written => stats.alerts += 1,
            Kind::FailureAlert if written => stats.failure_alerts += 1,
            Kind::NewDestination if written => stats.new_destination_alerts += 1,
            Kind::Spike if written => stats.spike_alerts += 1,
            // Once per metric line: follow clock steps, and render processes afresh (their
            // start time strings depend on the clock).
            Kind::Metric => {
                clock.refresh();
                process_json.clear();
            }
            Kind::Event
            | Kind::End
            | Kind::Alert
            | Kind::FailureAlert
            | Kind::NewDestination
            | Kind::Spike => {}
        }
        written
    }

    /// Writes out and (files) fdatasyncs. A failed flush loses nothing yet (the sink keeps
    /// the lines and tries again), so it counts as a write error, not as dropped lines.
    pub fn flush(&mut self) {
        let outputs = &mut self.outputs;
        if let Err(err) = outputs.sink.flush() {
            outputs.stats.write_errors += 1;
            if outputs.stats.write_errors.is_power_of_two() {
                log::error!("{err} ({} write errors so far)", outputs.stats.write_errors);
            }
        }
        if let Some(Err(err)) = outputs.alert_sink.as_mut().map(Sink::flush) {
            outputs.stats.write_errors += 1;
            log::error!("{err}");
        }
    }
}

impl Line<'_> {
    fn kind(&self) -> Kind {
        match self {
            Self::Connection { .. } | Self::Progress { .. } | Self::Dns { .. } => Kind::Event,
            Self::End { .. } => Kind::End,
            Self::Alert { .. } => Kind::Alert,
            Self::FailureAlert { .. } => Kind::FailureAlert,
            Self::NewDestination { .. } => Kind::NewDestination,
            Self::Spike { .. } => Kind::Spike,
            Self::Metric(_) => Kind::Metric,
        }
    }
}

/// What a line counts as, beyond a line written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Event,
    End,
    Alert,
    FailureAlert,
    NewDestination,
    Spike,
    Metric,
}

impl Outputs {
    /// Writes a rendered line (an alert also to `--alerts`) and counts it (Prometheus counts
    /// every line but the metric line). True when the output took it.
    fn deliver(&mut self, doc: &Document<'_>, kind: Kind) -> bool {
        let main = match self.text {
            Some(style) => self.sink.write_text(
                |line| text::render(doc, style, line),
                |line| output::chain::serialize(doc, line),
            ),
            None => self.sink.write_line(doc),
        };
        if matches!(
            kind,
            Kind::Alert | Kind::FailureAlert | Kind::NewDestination | Kind::Spike
        ) {
            if let Some(Err(err)) = self.alert_sink.as_mut().map(|sink| sink.write_line(doc)) {
                self.stats.write_errors += 1;
                if self.stats.write_errors.is_power_of_two() {
                    log::error!("{err}");
                }
            }
            // The journal logs its own failures (rate-limited).
            if self.journal.as_mut().is_some_and(|j| !j.send(doc)) {
                self.stats.write_errors += 1;
            }
        }
        let verdict = doc.egret.policy.as_ref().map(|p| p.verdict.as_ref());
        self.count(main, kind, (&doc.event.kind, &doc.event.action, verdict))
    }

    /// [`Self::deliver`] for a connection line, written by [`writer::write_line`] (never an
    /// alert).
    fn deliver_record(
        &mut self,
        record: &ConnectionRecord,
        facts: Facts<'_>,
        stamp: Stamp<'_>,
        rendered: Option<&RawValue>,
        kind: Kind,
    ) -> bool {
        let main = match self.text {
            // The document the JSON writer writes the bytes of, built to be drawn as text.
            Some(style) => {
                let doc = match facts {
                    Facts::Start { udp } => ecs::connection(record, udp, stamp, None),
                    Facts::End {
                        end,
                        start_seen,
                        kind,
                    } => ecs::end(record, end, start_seen, kind, stamp, None),
                };
                self.sink.write_text(
                    |line| text::render(&doc, style, line),
                    |line| writer::write_line(line, record, facts, stamp, rendered).map(Some),
                )
            }
            None => self.sink.write_rendered(|line| {
                writer::write_line(line, record, facts, stamp, rendered).map(Some)
            }),
        };
        let verdict = record.policy.as_ref().map(|p| p.verdict.name());
        let action = match facts {
            Facts::Start { .. } => record.action.name(),
            Facts::End { kind, .. } => kind.action(),
        };
        if let (
            Ok(()),
            Facts::End {
                kind: EndLine::StartAndEnd,
                ..
            },
        ) = (&main, facts)
        {
            // One line for both: Prometheus still counts the connect, so rates stay right.
            self.telemetry.line("event", record.action.name(), verdict);
        }
        self.count(main, kind, ("event", action, verdict))
    }

    /// Counts a line the output took (Prometheus counts every line but the metric line by its
    /// `event.kind`, `event.action` and verdict), or one it refused. True when it took it.
    fn count(
        &mut self,
        main: Result<(), OutputError>,
        kind: Kind,
        (event_kind, action, verdict): (&str, &str, Option<&str>),
    ) -> bool {
        match main {
            Ok(()) => {
                self.stats.lines_written += 1;
                if kind != Kind::Metric {
                    self.telemetry.line(event_kind, action, verdict);
                }
                true
            }
            Err(err) => {
                self.refused(&err);
                false
            }
        }
    }

    /// A line the output refused: counted as dropped; logged once per power of two.
    fn refused(&mut self, err: &OutputError) {
        self.stats.write_errors += 1;
        self.stats.dropped += 1;
        if self.stats.write_errors.is_power_of_two() {
            log::error!("{err} ({} write errors so far)", self.stats.write_errors);
        }
    }
}
