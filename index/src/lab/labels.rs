//! Labelled sets: which class each image belongs to, from the folder it sits in or from a CSV.

use std::collections::HashMap;

/// The class of an image at `path` (its path within what was dropped or given, `/`-separated):
/// the name of the folder it sits in, or `None` at the top.
pub fn folder_label(path: &str) -> Option<String> {
    let parts: Vec<&str> = path.split(['/', '\\']).filter(|p| !p.is_empty() && *p != ".").collect();
    (parts.len() >= 2).then(|| parts[parts.len() - 2].to_string())
}

/// Extensions of the image files a folder is read for (slides and everything else aside).
pub const IMAGE_EXTENSIONS: [&str; 9] = ["png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff", "jfif"];

/// Is `path` an image file by its extension?
pub fn is_image_path(path: &str) -> bool {
    path.rsplit_once('.').is_some_and(|(_, e)| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Folder labels for a batch of paths, kept only when they name at least two classes (one
/// folder of photos is a collection, not a labelled set).
pub fn folder_labels(paths: &[String]) -> Vec<Option<String>> {
    let labels: Vec<Option<String>> = paths.iter().map(|p| folder_label(p)).collect();
    let mut distinct: Vec<&String> = labels.iter().flatten().collect();
    distinct.sort();
    distinct.dedup();
    if distinct.len() >= 2 { labels } else { vec![None; paths.len()] }
}

/// Is this file a label table rather than an image?
pub fn is_label_csv(path: &str) -> bool {
    path.to_ascii_lowercase().ends_with(".csv")
}

/// A `file,label` table: a header naming the columns (`file`/`filename`/`path`/`image`/`name`
/// and `label`/`class`/`category`/`target`/`diagnosis`, any case), or, without one, the first
/// two columns. Quoted fields (RFC 4180) are read; blank lines are skipped.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelTable {
    /// By the path as written (`/`-separated, no leading `./`); `None` where rows disagree.
    by_path: HashMap<String, Option<String>>,
    /// By file name alone; `None` where the name is ambiguous.
    by_name: HashMap<String, Option<String>>,
    /// By file name without its extension, for tables that list ids (`ISIC_0024306`).
    by_stem: HashMap<String, Option<String>>,
    pub rows: usize,
}

impl LabelTable {
    pub fn parse(text: &str) -> Result<LabelTable, String> {
        let text = text.trim_start_matches('\u{feff}');
        // The separator: whichever of `,` `;` tab the first line has most of (spreadsheets in
        // many locales write `;`).
        let first_line = text.lines().next().unwrap_or_default();
        let delim = [',', ';', '\t'].into_iter().max_by_key(|d| (first_line.matches(*d).count(), *d == ',')).unwrap_or(',');
        let rows = csv_rows(text, delim)?;
        let Some(first) = rows.first() else { return Err("the label CSV is empty".into()) };
        // The column of the first name (in this order of preference) that the header has.
        let find = |names: &[&str]| names.iter().find_map(|n| first.iter().position(|h| h.trim().eq_ignore_ascii_case(n)));
        const FILE: [&str; 8] = ["file", "filename", "file_name", "path", "image", "name", "image_id", "id"];
        const LABEL: [&str; 6] = ["label", "class", "category", "target", "diagnosis", "dx"];
        let (file_col, label_col, skip) = match (find(&FILE), find(&LABEL)) {
            (Some(f), Some(l)) => (f, l, 1),
            // A header naming one of the two: not a label table (a `file,split` list, metadata).
            (Some(_), None) => return Err(format!("its header names no label column ({})", LABEL.join(", "))),
            (None, Some(_)) => return Err(format!("its header names no file column ({})", FILE.join(", "))),
            _ if first.len() >= 2 => (0, 1, 0),
            _ => return Err("the label CSV needs two columns: file and label".into()),
        };
        let mut table = LabelTable::default();
        for (i, row) in rows.iter().enumerate().skip(skip) {
            if row.iter().all(|f| f.trim().is_empty()) {
                continue;
            }
            let (Some(file), Some(label)) = (row.get(file_col), row.get(label_col)) else {
                return Err(format!("line {} of the label CSV has {} column(s), not {}", i + 1, row.len(), file_col.max(label_col) + 1));
            };
            let (file, label) = (clean_path(file), label.trim().to_string());
            if file.is_empty() || label.is_empty() {
                continue;
            }
            let name = file.rsplit('/').next().unwrap_or(&file).to_string();
            let agree = |map: &mut HashMap<String, Option<String>>, key: String| {
                map.entry(key).and_modify(|l| if l.as_deref() != Some(label.as_str()) { *l = None }).or_insert(Some(label.clone()));
            };
            if !name.contains('.') {
                agree(&mut table.by_stem, name.clone());
            }
            agree(&mut table.by_name, name);
            agree(&mut table.by_path, file);
            table.rows += 1;
        }
        if table.rows == 0 {
            return Err("the label CSV has no rows with a file and a label".into());
        }
        Ok(table)
    }

    /// The label of the image at `path`: the longest path in the table that `path` ends with,
    /// else its file name when that is unambiguous in the table.
    pub fn label_of(&self, path: &str) -> Option<&str> {
        let path = clean_path(path);
        let mut rest = path.as_str();
        loop {
            if let Some(l) = self.by_path.get(rest) {
                // Rows that disagree on this path label nothing.
                return l.as_deref();
            }
            match rest.split_once('/') {
                Some((_, tail)) => rest = tail,
                None => break,
            }
        }
        let name = path.rsplit('/').next().unwrap_or(&path);
        if let Some(l) = self.by_name.get(name) {
            return l.as_deref();
        }
        let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
        self.by_stem.get(stem).and_then(|l| l.as_deref())
    }
}

fn clean_path(p: &str) -> String {
    let p = p.trim().replace('\\', "/");
    p.trim_start_matches("./").trim_start_matches('/').to_string()
}

fn csv_rows(text: &str, delim: char) -> Result<Vec<Vec<String>>, String> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    let mut line = 1;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => {
                if c == '\n' {
                    line += 1;
                }
                field.push(c)
            }
            (false, '"') if field.trim().is_empty() => {
                field.clear();
                quoted = true
            }
            (false, c) if c == delim => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                line += 1;
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err(format!("the label CSV has an unclosed quote (line {line})"));
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    Ok(rows)
}

/// A CSV field: quoted when it needs it, spreadsheet formulas defused.
pub fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) { format!("'{s}") } else { s.to_string() };
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s }
}

/// The classes of a labelled set, sorted (a stable order for matrices and reports), and each
/// labelled image's class index.
pub fn class_indices(labels: &[&str]) -> (Vec<String>, Vec<usize>) {
    let mut classes: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
    classes.sort();
    classes.dedup();
    let idx = labels.iter().map(|l| classes.binary_search_by(|c| c.as_str().cmp(l)).expect("listed")).collect();
    (classes, idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_name_classes() {
        assert_eq!(folder_label("kather/TUM/a.png").as_deref(), Some("TUM"));
        assert_eq!(folder_label("a.png"), None);
        let paths: Vec<String> = ["set/ADI/1.png", "set/TUM/2.png", "x.png"].map(String::from).to_vec();
        assert_eq!(folder_labels(&paths), vec![Some("ADI".into()), Some("TUM".into()), None]);
        let one: Vec<String> = ["photos/1.png", "photos/2.png"].map(String::from).to_vec();
        assert_eq!(folder_labels(&one), vec![None, None]);
    }

    #[test]
    fn csv_with_header_quotes_and_paths() {
        let t = LabelTable::parse("\u{feff}id,Filename,Class\n1,\"a, b.png\",tumour\n2,./x/c.png,\"muc\"\"us\"\n\n3,y/c.png,stroma\r\n").unwrap();
        assert_eq!(t.rows, 3);
        assert_eq!(t.label_of("drop/a, b.png"), Some("tumour"));
        assert_eq!(t.label_of("set/x/c.png"), Some("muc\"us"));
        assert_eq!(t.label_of("y/c.png"), Some("stroma"));
        // c.png alone is ambiguous.
        assert_eq!(t.label_of("c.png"), None);
        let plain = LabelTable::parse("a.png;tumour\nb.png;stroma").unwrap();
        assert_eq!(plain.label_of("b.png"), Some("stroma"));
        assert!(LabelTable::parse("only\n").is_err());
        // A header with a file column and no label column is not a label table.
        assert!(LabelTable::parse("file,split\na.png,train\n").unwrap_err().contains("no label column"));
        // Rows that disagree about one file label it with neither.
        let clash = LabelTable::parse("file,label\n0001.png,TUM\n0001.png,STR\n0002.png,TUM\n").unwrap();
        assert_eq!(clash.label_of("set/0001.png"), None);
        assert_eq!(clash.label_of("set/0002.png"), Some("TUM"));
        // Ids without an extension (HAM10000, ISIC) match the image files.
        let ids = LabelTable::parse("image_id,dx\nISIC_0024306,nv\nISIC_0024307,mel\n").unwrap();
        assert_eq!(ids.label_of("HAM10000_images/ISIC_0024307.jpg"), Some("mel"));
        assert!(LabelTable::parse("file,label\n\"a.png,x\n").is_err());
    }

    #[test]
    fn classes_sorted() {
        let (c, i) = class_indices(&["b", "a", "b"]);
        assert_eq!(c, vec!["a", "b"]);
        assert_eq!(i, vec![1, 0, 1]);
    }
}
