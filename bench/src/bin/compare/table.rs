//! Samples, rows, medians, and the printed table / JSON.

use std::fmt::Write as _;

/// One measurement of one row.
#[derive(Clone, Copy, Default)]
pub struct Sample {
    pub records: u64,
    pub secs: f64,
    /// (p50, p99) in µs, when the row measures latency.
    pub lat: Option<(f64, f64)>,
    /// A row measuring something else (open time, memory): its value.
    pub value: Option<f64>,
    /// CPU time of the measuring thread, for single-threaded rows.
    pub cpu_secs: Option<f64>,
}

impl Sample {
    pub fn throughput(records: u64, secs: f64) -> Sample {
        Sample {
            records,
            secs,
            ..Sample::default()
        }
    }

    pub fn value(v: f64) -> Sample {
        Sample {
            value: Some(v),
            ..Sample::default()
        }
    }

    fn rate(&self) -> Option<f64> {
        (self.records > 0 && self.secs > 0.0).then(|| self.records as f64 / self.secs)
    }

    fn cpu_rate(&self) -> Option<f64> {
        self.cpu_secs
            .filter(|&c| self.records > 0 && c > 0.0)
            .map(|c| self.records as f64 / c)
    }
}

/// Where a row is printed; the table lists sections in this order.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Section {
    Append100,
    Read100,
    Append1k,
    Read1k,
    Single,
    Latency,
    Group,
    Durable,
    Open,
    Memory,
}

impl Section {
    const ALL: [Section; 10] = [
        Section::Append100,
        Section::Read100,
        Section::Append1k,
        Section::Read1k,
        Section::Single,
        Section::Latency,
        Section::Group,
        Section::Durable,
        Section::Open,
        Section::Memory,
    ];

    fn title(self) -> &'static str {
        match self {
            Section::Append100 => "append 100 B (no fsync)",
            Section::Read100 => "read all in order, 100 B (page cache warm)",
            Section::Append1k => "append 1 KiB (no fsync)",
            Section::Read1k => "read all in order, 1 KiB (page cache warm)",
            Section::Single => "single send(), no fsync",
            Section::Latency => "produce -> consume, 100 B",
            Section::Group => "consumer group of 4 / work queue with 4 workers, 100 B (read all)",
            Section::Durable => "durable append, 100 B",
            Section::Open => "open time (value = ms)",
            Section::Memory => "memory while reading (value = MiB RssAnon, peak)",
        }
    }
}

pub struct Row {
    pub section: Section,
    pub name: String,
    pub payload: usize,
    /// Name of the row this one's records/s is divided by.
    pub reference: Option<String>,
    pub note: String,
    pub samples: Vec<Sample>,
}

#[derive(Default)]
pub struct Table {
    pub rows: Vec<Row>,
}

/// Describes a row the first time it is added.
pub struct RowSpec<'a> {
    pub section: Section,
    pub name: &'a str,
    pub payload: usize,
    pub reference: Option<&'a str>,
    pub note: &'a str,
}

impl Table {
    pub fn add(&mut self, spec: RowSpec<'_>, s: Sample) {
        if let Some(r) = self.rows.iter_mut().find(|r| r.name == spec.name) {
            r.samples.push(s);
            return;
        }
        self.rows.push(Row {
            section: spec.section,
            name: spec.name.to_string(),
            payload: spec.payload,
            reference: spec.reference.map(str::to_string),
            note: spec.note.to_string(),
            samples: vec![s],
        });
    }

    fn median_rate(&self, name: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.name == name)
            .and_then(|r| median(r.samples.iter().filter_map(Sample::rate).collect()))
    }

    fn median_cpu_rate(&self, name: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.name == name)
            .and_then(|r| median(r.samples.iter().filter_map(Sample::cpu_rate).collect()))
    }
}

pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p * sorted.len() as f64) as usize).min(sorted.len() - 1);
    sorted[i] as f64 / 1000.0
}

/// (p50, p99) in µs of latencies in ns.
pub fn lat_of(mut ns: Vec<u64>) -> Option<(f64, f64)> {
    ns.sort_unstable();
    Some((percentile(&ns, 0.50), percentile(&ns, 0.99)))
}

struct Summary {
    rate: Option<f64>,
    mbs: Option<f64>,
    ratio: Option<f64>,
    cpu_ratio: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
    value: Option<f64>,
}

fn summarize(t: &Table, r: &Row) -> Summary {
    let rate = median(r.samples.iter().filter_map(Sample::rate).collect());
    let lat =
        |f: fn((f64, f64)) -> f64| median(r.samples.iter().filter_map(|s| s.lat.map(f)).collect());
    Summary {
        rate,
        mbs: rate.map(|x| x * r.payload as f64 / 1e6),
        ratio: match &r.reference {
            Some(b) => rate.zip(t.median_rate(b)).map(|(a, b)| a / b),
            None => None,
        },
        cpu_ratio: match &r.reference {
            Some(b) => median(r.samples.iter().filter_map(Sample::cpu_rate).collect())
                .zip(t.median_cpu_rate(b))
                .map(|(a, b)| a / b),
            None => None,
        },
        p50: lat(|l| l.0),
        p99: lat(|l| l.1),
        value: median(r.samples.iter().filter_map(|s| s.value).collect()),
    }
}

fn is_baseline(r: &Row) -> bool {
    r.reference.is_none() && r.name.starts_with("baseline")
}

/// Small values (allocations per record) need more digits than milliseconds.
fn fmt_value(v: f64) -> String {
    if v.abs() < 1.0 {
        format!("{v:.4}")
    } else {
        format!("{v:.1}")
    }
}

pub fn print(t: &Table) {
    let opt =
        |v: Option<f64>, prec: usize| v.map_or_else(|| "-".to_string(), |v| format!("{v:.prec$}"));
    println!(
        "{:<58} {:>12} {:>9} {:>7} {:>7} {:>9} {:>9} {:>9}  note",
        "workload", "records/s", "MB/s", "x ref", "x cpu", "p50 us", "p99 us", "value"
    );
    for section in Section::ALL {
        let rows: Vec<&Row> = t.rows.iter().filter(|r| r.section == section).collect();
        if rows.is_empty() {
            continue;
        }
        println!("-- {}", section.title());
        for r in rows {
            let s = summarize(t, r);
            let ratio = |x: Option<f64>| match x {
                Some(x) => format!("{x:.2}"),
                None if is_baseline(r) => "1.00".into(),
                None => "-".into(),
            };
            println!(
                "{:<58} {:>12} {:>9} {:>7} {:>7} {:>9} {:>9} {:>9}  {}",
                r.name,
                opt(s.rate, 0),
                opt(s.mbs, 1),
                ratio(s.ratio),
                ratio(s.cpu_ratio),
                opt(s.p50, 1),
                opt(s.p99, 1),
                s.value.map_or_else(|| "-".to_string(), fmt_value),
                r.note
            );
        }
    }
    println!(
        "\nx ref: median records/s over the median of the reference row (the baseline \
         write()/read() of the same record size unless the note names another). \
         x cpu: the same ratio from the measuring thread's CPU time (user + system), \
         single-threaded rows only; it moves less than the wall clock when the machine is shared. \
         MB/s = payload bytes / 1e6. Medians over the repetitions, each column separately."
    );
}

pub fn to_json(t: &Table, header: &[(&str, String)]) -> String {
    let num = |v: Option<f64>| match v {
        Some(x) if x.is_finite() => format!("{x:.3}"),
        _ => "null".into(),
    };
    let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out = String::from("{\n");
    for (k, v) in header {
        let _ = writeln!(out, "  \"{}\": \"{}\",", esc(k), esc(v));
    }
    out.push_str("  \"rows\": [\n");
    for (i, r) in t.rows.iter().enumerate() {
        let s = summarize(t, r);
        let reps: Vec<String> = r
            .samples
            .iter()
            .map(|x| num(x.rate().or(x.value)))
            .collect();
        let _ = writeln!(
            out,
            "    {{\"section\": \"{}\", \"workload\": \"{}\", \"payload_bytes\": {}, \"records_per_s\": {}, \
             \"mb_per_s\": {}, \"x_ref\": {}, \"x_ref_cpu\": {}, \"reference\": {}, \"p50_us\": {}, \"p99_us\": {}, \
             \"value\": {}, \"reps\": [{}], \"note\": \"{}\"}}{}",
            esc(r.section.title()),
            esc(&r.name),
            r.payload,
            num(s.rate),
            num(s.mbs),
            num(s.ratio.or(is_baseline(r).then_some(1.0))),
            num(s.cpu_ratio.or(is_baseline(r).then_some(1.0))),
            r.reference
                .as_deref()
                .map_or("null".into(), |b| format!("\"{}\"", esc(b))),
            num(s.p50),
            num(s.p99),
            num(s.value),
            reps.join(", "),
            esc(&r.note),
            if i + 1 < t.rows.len() { "," } else { "" }
        );
    }
    out.push_str("  ]\n}\n");
    out
}
