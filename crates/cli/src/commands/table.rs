//! The CLI's tables: plain columns as `ollama ls` prints them, sized to the terminal
//! (a long cell wraps inside its column instead of breaking the row), and as wide as
//! they need when piped.

use comfy_table::{CellAlignment, ContentArrangement, Table, presets};

/// A table of `header` over `rows`; the columns named in `right` are aligned right
/// (sizes, counts).
pub fn render(header: &[&str], right: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().copied());
    for row in rows {
        table.add_row(row);
    }
    for (i, name) in header.iter().enumerate() {
        if right.contains(name)
            && let Some(column) = table.column_mut(i)
        {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    // comfy-table pads each line on both sides; a table printed to a terminal
    // starts at its left edge, and no line ends in spaces
    let mut out = String::new();
    for line in table.lines() {
        out.push_str(line.strip_prefix(' ').unwrap_or(&line).trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn columns_line_up_and_numbers_sit_right() {
        let out = render(
            &["NAME", "SIZE"],
            &["SIZE"],
            vec![
                vec!["smollm2:q4_1".into(), "1 MiB".into()],
                vec!["a".into(), "100 MiB".into()],
            ],
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[0].starts_with("NAME"), "{out}");
        // the sizes end in the same column
        assert_eq!(lines[1].len(), lines[2].len(), "{out}");
        assert!(lines[1].ends_with(" 1 MiB"), "{out}");
    }
}
