//! virsh's table layout (`vsh-table.c`): every cell is preceded by one space and padded to its
//! column's width plus two spaces, except the last cell of a row; the header is followed by a
//! line of dashes as wide as all columns plus three characters each.

/// A table with a header row and data rows, printed like `vshTablePrintToStdout`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row; missing cells print empty and extra cells are dropped, so every row has
    /// as many cells as the header.
    pub fn push_row<S: AsRef<str>>(&mut self, cells: &[S]) {
        let mut row: Vec<String> = cells
            .iter()
            .take(self.header.len())
            .map(|c| c.as_ref().to_owned())
            .collect();
        row.resize(self.header.len(), String::new());
        self.rows.push(row);
    }

    /// The table as text; `quiet` leaves out the header and the dashes, as `virsh -q` does.
    pub fn render(&self, quiet: bool) -> String {
        let widths = self.column_widths(!quiet);
        let mut out = String::new();
        if !quiet {
            render_row(&mut out, &self.header, &widths);
            let dashes: usize = widths.iter().map(|w| w + 3).sum();
            out.push_str(&"-".repeat(dashes));
            out.push('\n');
        }
        for row in &self.rows {
            render_row(&mut out, row, &widths);
        }
        out
    }

    /// Column widths; like `vshTablePrint`, the header only counts when it is printed.
    fn column_widths(&self, with_header: bool) -> Vec<usize> {
        let mut widths: Vec<usize> = if with_header {
            self.header.iter().map(|h| display_width(h)).collect()
        } else {
            vec![0; self.header.len()]
        };
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(display_width(cell));
            }
        }
        widths
    }
}

fn render_row(out: &mut String, cells: &[String], widths: &[usize]) {
    let last = cells.len().saturating_sub(1);
    for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
        out.push(' ');
        out.push_str(cell);
        if i != last {
            let pad = width - display_width(cell) + 2;
            out.push_str(&" ".repeat(pad));
        }
    }
    out.push('\n');
}

/// Columns a cell takes on a terminal. virsh uses `wcwidth`; counting characters is exact for
/// the ASCII and most Latin text that domain names and paths hold, and wide (CJK) characters
/// are counted as two.
pub fn display_width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

fn char_width(c: char) -> usize {
    let cp = u32::from(c);
    let wide = matches!(cp,
        0x1100..=0x115F | 0x2E80..=0x303E | 0x3041..=0x33FF | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF | 0xA000..=0xA4CF | 0xAC00..=0xD7A3 | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F | 0xFF00..=0xFF60 | 0xFFE0..=0xFFE6 | 0x1F300..=0x1F64F
        | 0x1F900..=0x1F9FF | 0x20000..=0x2FFFD | 0x30000..=0x3FFFD);
    if c.is_control() {
        0
    } else if wide {
        2
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_virsh_list_layout() {
        // Arrange: `virsh -c test:///default list --all` after defining a second domain.
        let mut table = Table::new(&["Id", "Name", "State"]);
        table.push_row(&["1", "test", "paused"]);
        table.push_row(&["2", "d3", "running"]);
        table.push_row(&["-", "second-domain-long", "shut off"]);

        // Act
        let text = table.render(false);

        // Assert
        assert_eq!(
            text,
            " Id   Name                 State\n\
             -------------------------------------\n \
             1    test                 paused\n \
             2    d3                   running\n \
             -    second-domain-long   shut off\n"
        );
    }

    #[test]
    fn empty_table_has_header_width_dashes() {
        // Arrange: `virsh list --inactive` with no inactive domain.
        let table = Table::new(&["Id", "Name", "State"]);

        // Act
        let text = table.render(false);

        // Assert
        assert_eq!(text, " Id   Name   State\n--------------------\n");
    }

    #[test]
    fn quiet_drops_header_and_empty_last_cell_keeps_separator() {
        // Arrange: `virsh list --title` prints the separator before an empty title.
        let mut table = Table::new(&["Id", "Name", "State", "Title"]);
        table.push_row(&["1", "test", "running", ""]);

        // Act
        let loud = table.render(false);
        let quiet = table.render(true);

        // Assert
        assert_eq!(
            loud,
            " Id   Name   State     Title\n------------------------------\n 1    test   running   \n"
        );
        // `virsh -q list --all` prints " 1   test   running": the header does not count.
        assert_eq!(quiet, " 1   test   running   \n");
    }

    #[test]
    fn short_rows_are_padded_and_wide_characters_count_double() {
        // Arrange
        let mut table = Table::new(&["A", "B"]);
        table.push_row(&["日本"]);

        // Act
        let text = table.render(false);

        // Assert
        assert_eq!(text, " A      B\n-----------\n 日本   \n");
    }
}
