//! Drawing `egret top`'s screen from the [`super::model::Model`] and the view's state: a
//! title line, the table, and a status bar. Every text from the lines is drawn through
//! [`crate::ecs::text::clean`]: control characters from a watched process never reach the
//! terminal.

use ratatui::{
    layout::{Constraint, Layout},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Cell, Paragraph, Row, Table, TableState},
    Frame,
};

use super::{
    model::{Grouping, Model, SortBy},
    View,
};
use crate::{
    ecs::text::{bytes, clean},
    report::input::Verdict,
};

/// Draws one frame.
pub fn frame(frame: &mut Frame<'_>, model: &Model, view: &View, input: &str) {
    let [title, table, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let rows = model.rows(view.grouping, view.sort, view.ascending, &view.filter);
    let arrow = if view.ascending { "↑" } else { "↓" };
    let filter = if view.editing {
        format!("  filter: {}▏", clean(&view.filter))
    } else if view.filter.is_empty() {
        String::new()
    } else {
        format!("  filter: {}", clean(&view.filter))
    };
    frame.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled("egret top", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(format!(
                "  by {}  sort {} {arrow}  {} row(s), {} group(s){filter}  {}",
                view.grouping.title().to_lowercase(),
                view.sort.name(),
                rows.len(),
                model.groups(view.grouping),
                clean(input),
            )),
        ])),
        title,
    );
    let header = Row::new(
        [
            view.grouping.title(),
            "DESTINATION",
            "CONNS",
            "SENT",
            "RECV",
            "ALERTS",
            "LAST SEEN",
            "VERDICT",
        ]
        .map(|t| Cell::from(header_title(t, view))),
    )
    .style(Style::new().add_modifier(Modifier::REVERSED));
    // The two text columns share what the others leave (widths + one space between columns);
    // a longer text keeps its end (a path's file name, a name's domain and port).
    let text_width = usize::from(table.width.saturating_sub(FIXED + 7) / 2);
    let body = rows.iter().map(|row| {
        let colour = match row.verdict {
            _ if !view.colour => Color::Reset,
            Some(Verdict::Blocked) => Color::Red,
            Some(Verdict::Unapproved) => Color::Yellow,
            Some(Verdict::Approved) => Color::Green,
            None => Color::Reset,
        };
        Row::new(vec![
            Cell::from(keep_end(&clean(&row.group), text_width)),
            Cell::from(keep_end(&clean(&row.destination), text_width)),
            Cell::from(row.connections.to_string()),
            Cell::from(bytes(row.bytes_sent)),
            Cell::from(bytes(row.bytes_received)),
            Cell::from(row.alerts.to_string()),
            Cell::from(row.last_seen.get(11..19).unwrap_or("-").to_owned()),
            Cell::from(row.verdict_name()).style(Style::new().fg(colour)),
        ])
    });
    let widths = [
        Constraint::Fill(1),
        Constraint::Fill(1),
        Constraint::Length(6),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(6),
        Constraint::Length(9),
        Constraint::Length(10),
    ];
    let mut state =
        TableState::default().with_offset(view.scroll.min(rows.len().saturating_sub(1)));
    frame.render_stateful_widget(Table::new(body, widths).header(header), table, &mut state);
    frame.render_widget(Paragraph::new(status_line(model, view)), status);
}

/// The widths of the columns but the group and the destination.
const FIXED: u16 = 6 + 10 + 10 + 6 + 9 + 10;

/// `text`, or `…` and its last `width - 1` characters when longer.
pub fn keep_end(text: &str, width: usize) -> String {
    let count = text.chars().count();
    if count <= width || width == 0 {
        return text.to_owned();
    }
    let mut out = String::from("…");
    out.extend(text.chars().skip(count - width + 1));
    out
}

/// A column title, marked when the rows are sorted by it.
fn header_title(title: &'static str, view: &View) -> String {
    let sorted = match title {
        "CONNS" => SortBy::Connections,
        "SENT" | "RECV" => SortBy::Bytes,
        "LAST SEEN" => SortBy::LastSeen,
        "DESTINATION" => SortBy::Destination,
        "VERDICT" => SortBy::Verdict,
        _ if Grouping::ALL.iter().any(|g| g.title() == title) => SortBy::Group,
        _ => return title.to_owned(),
    };
    if sorted == view.sort {
        format!("{title}*")
    } else {
        title.to_owned()
    }
}

/// Lines read, unparsed, losses, and the keys.
fn status_line(model: &Model, view: &View) -> Line<'static> {
    let c = &model.counts;
    let mut spans = vec![Span::raw(format!("lines {}", c.read))];
    let warn = if view.colour {
        Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)
    } else {
        Style::new().add_modifier(Modifier::BOLD)
    };
    if c.unparsed > 0 {
        spans.push(Span::styled(format!("  unparsed {}", c.unparsed), warn));
    }
    if c.lost + c.dropped > 0 {
        spans.push(Span::styled(
            format!("  egret lost {} dropped {}", c.lost, c.dropped),
            warn,
        ));
    }
    if c.overflow > 0 {
        spans.push(Span::styled(format!("  not shown {}", c.overflow), warn));
    }
    if let Some(message) = &view.message {
        spans.push(Span::styled(format!("  {}", clean(message)), warn));
    }
    spans.push(Span::styled(
        if view.editing {
            "  type to filter, Enter keep, Esc clear".to_owned()
        } else {
            "  q quit  g group  c/b/l/d/v/n sort  r reverse  / filter".to_owned()
        },
        Style::new().add_modifier(Modifier::DIM),
    ));
    Line::from(spans)
}

#[cfg(test)]
mod tests {
    use super::keep_end;

    #[test]
    fn a_long_text_keeps_its_end() {
        assert_eq!(keep_end("/usr/bin/curl", 20), "/usr/bin/curl");
        assert_eq!(keep_end("/usr/lib/jvm/bin/java", 10), "…/bin/java");
        assert_eq!(keep_end("東京東京", 3), "…東京");
        assert_eq!(keep_end("abc", 0), "abc");
    }
}
