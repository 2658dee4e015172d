//! The baseline's alert lines: `new-destination` and `spike` (docs/baseline.md). Each is the
//! connection's own line (its full identity) turned into an alert, with `egret.baseline`
//! naming the workload and the destination as the baseline keys them.

use std::borrow::Cow;

use super::{connection, destination_text, Stamp};
use crate::{
    baseline::{spikes::Spike, Destination, Workload},
    record::ConnectionRecord,
    schema::{self, Alert, BaselineKey, Document, Keywords, Name},
};

/// `event.severity` of a `new-destination` alert.
pub const SEVERITY_NEW_DESTINATION: u8 = 60;
/// `event.severity` of a `spike` alert.
pub const SEVERITY_SPIKE: u8 = 55;

fn key<'a>(workload: &'a Workload, destination: &Destination) -> BaselineKey<'a> {
    BaselineKey {
        workload_kind: Cow::Borrowed(workload.kind.name()),
        workload: Cow::Borrowed(&workload.name),
        destination: Cow::Owned(destination.to_string()),
    }
}

fn who(record: &ConnectionRecord) -> String {
    let process = &record.process;
    let exe = process
        .executable
        .as_deref()
        .unwrap_or("executable unknown");
    format!("{} (pid {}, {exe})", process.name, process.pid)
}

/// The alert for a workload's first connection to a destination after its learning period.
pub fn new_destination<'a>(
    record: &'a ConnectionRecord,
    workload: &'a Workload,
    destination: &Destination,
    stamp: Stamp<'a>,
) -> Document<'a> {
    let mut doc = connection(record, None, stamp, None);
    doc.event.kind = Cow::Borrowed("alert");
    doc.event.dataset = Cow::Borrowed("egret.alert");
    doc.event.severity = Some(SEVERITY_NEW_DESTINATION);
    doc.event.types = Keywords::Static(&["connection", "start"]);
    doc.event.action = Cow::Borrowed("new-destination");
    doc.rule = Some(Name::of("new-destination"));
    doc.message = Some(Cow::Owned(format!(
        "{} of workload {workload} reached {destination} ({}), new to the workload since its baseline was learned",
        who(record),
        destination_text(record),
    )));
    doc.egret.alert = Some(Alert {
        repeats: 0,
        window_seconds: 0,
    });
    doc.egret.baseline = Some(key(workload, destination));
    doc
}

/// The alert for a burst of connection failures and HTTP errors to one destination.
pub fn spike<'a>(
    record: &'a ConnectionRecord,
    workload: &'a Workload,
    destination: &Destination,
    spike: &Spike,
    window_seconds: u64,
    stamp: Stamp<'a>,
) -> Document<'a> {
    let mut doc = connection(record, None, stamp, None);
    doc.event.kind = Cow::Borrowed("alert");
    doc.event.dataset = Cow::Borrowed("egret.alert");
    doc.event.severity = Some(SEVERITY_SPIKE);
    doc.event.types = Keywords::Static(&["connection", "error"]);
    doc.event.action = Cow::Borrowed("spike");
    doc.event.outcome = Some(Cow::Borrowed("failure"));
    doc.rule = Some(Name::of("spike"));
    let status = spike
        .last_status
        .map(|s| format!(", last HTTP status {s}"))
        .unwrap_or_default();
    doc.message = Some(Cow::Owned(format!(
        "workload {workload} ({}): {} of {} connections to {destination} failed or got HTTP errors within {window_seconds}s ({} connect failures, {} HTTP errors{status}); its recent normal is {:.0}%",
        who(record),
        spike.failures + spike.http_errors,
        spike.total,
        spike.failures,
        spike.http_errors,
        spike.normal * 100.0,
    )));
    doc.egret.baseline = Some(key(workload, destination));
    doc.egret.spike = Some(schema::Spike {
        window_seconds,
        connections: spike.total,
        failures: spike.failures,
        http_errors: spike.http_errors,
        error_share: spike.share,
        normal_share: spike.normal,
        last_status: spike.last_status,
    });
    doc
}
