//! What `harness plot` reads: `--series NAME=FILE[,FILE...]` arguments and the files the other
//! commands write (a run's metrics.jsonl, `eval`'s and `passkey`'s JSON), turned into points.

use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::ValueEnum;
use longlora::{Error, Result};
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// One curve: a legend name and its (x, y) points in increasing x.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// One file of a series, with the x value it stands for when the file does not say.
#[derive(Clone, Debug)]
struct SeriesFile {
    x: Option<f64>,
    path: PathBuf,
}

/// A `--series NAME=[X:]FILE[,[X:]FILE...]` argument.
#[derive(Clone, Debug)]
pub struct SeriesArg {
    name: String,
    files: Vec<SeriesFile>,
}

impl FromStr for SeriesArg {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (name, files) = s
            .split_once('=')
            .ok_or_else(|| format!("expected NAME=FILE[,FILE...], got `{s}`"))?;
        if name.is_empty() || files.is_empty() {
            return Err(format!(
                "expected NAME=FILE[,FILE...] with a name and a file, got `{s}`"
            ));
        }
        let files = files
            .split(',')
            .map(|f| match f.split_once(':') {
                Some((x, path)) if x.parse::<f64>().is_ok() => SeriesFile {
                    x: x.parse().ok(),
                    path: path.into(),
                },
                _ => SeriesFile {
                    x: None,
                    path: f.into(),
                },
            })
            .collect();
        Ok(SeriesArg {
            name: name.to_string(),
            files,
        })
    }
}

impl SeriesArg {
    /// The series from the points each file gives, sorted by x.
    fn collect(
        &self,
        mut points_of: impl FnMut(&SeriesFile) -> Result<Vec<(f64, f64)>>,
    ) -> Result<Series> {
        let mut points = Vec::new();
        for f in &self.files {
            points.extend(points_of(f)?);
        }
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok(Series {
            name: self.name.clone(),
            points,
        })
    }
}

fn read_text(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

fn parse_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    serde_json::from_str(&read_text(path)?).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// The step lines of a run's metrics.jsonl, as the training commands write them.
#[derive(Deserialize)]
struct StepLine {
    step: usize,
    loss: f64,
}

/// Training loss against step from a run directory or its metrics.jsonl.
pub fn loss_series(arg: &SeriesArg) -> Result<Series> {
    arg.collect(|f| {
        let path = if f.path.is_dir() {
            f.path.join("metrics.jsonl")
        } else {
            f.path.clone()
        };
        let mut points = Vec::new();
        for (i, line) in read_text(&path)?.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let s: StepLine = serde_json::from_str(line).map_err(|e| Error::BadFile {
                path: path.clone(),
                message: format!("line {}: not a training step record: {e}", i + 1),
            })?;
            points.push((s.step as f64, s.loss));
        }
        if points.is_empty() {
            return Err(Error::BadFile {
                path,
                message: "no training steps in it".into(),
            });
        }
        Ok(points)
    })
}

/// What `harness eval` prints.
#[derive(Deserialize)]
struct EvalOutput {
    perplexity: f64,
    mean_loss: f64,
    /// Not printed by every version of `eval`: then the file's `CONTEXT:` prefix gives it.
    context: Option<f64>,
}

/// Which number of an eval result to plot.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum EvalMetric {
    Perplexity,
    /// The mean loss in nats per token.
    Loss,
}

/// One point per eval JSON file: (context, perplexity or loss).
pub fn eval_series(arg: &SeriesArg, metric: EvalMetric) -> Result<Series> {
    arg.collect(|f| {
        let out: EvalOutput = parse_json(&f.path)?;
        let context = out.context.or(f.x).ok_or_else(|| Error::BadFile {
            path: f.path.clone(),
            message: "no `context` in this eval result: name it as CONTEXT:FILE".into(),
        })?;
        let y = match metric {
            EvalMetric::Perplexity => out.perplexity,
            EvalMetric::Loss => out.mean_loss,
        };
        Ok(vec![(context, y)])
    })
}

#[derive(Deserialize)]
struct PasskeyLength {
    length: usize,
    accuracy: f64,
}

/// What `harness passkey` prints (the fields plotted).
#[derive(Deserialize)]
struct PasskeyOutput {
    results: Vec<PasskeyLength>,
}

/// Accuracy (%) against prompt length from passkey JSON files.
pub fn passkey_series(arg: &SeriesArg) -> Result<Series> {
    arg.collect(|f| {
        let out: PasskeyOutput = parse_json(&f.path)?;
        if out.results.is_empty() {
            return Err(Error::BadFile {
                path: f.path.clone(),
                message: "no results in this passkey output".into(),
            });
        }
        Ok(out
            .results
            .iter()
            .map(|r| (r.length as f64, 100.0 * r.accuracy))
            .collect())
    })
}

/// The trailing mean over `window` points (the first points average what there is).
pub fn smoothed(series: &Series, window: usize) -> Series {
    let window = window.max(1);
    let points = (0..series.points.len())
        .map(|i| {
            let span = &series.points[(i + 1).saturating_sub(window)..=i];
            let mean = span.iter().map(|p| p.1).sum::<f64>() / span.len() as f64;
            (series.points[i].0, mean)
        })
        .collect();
    Series {
        name: series.name.clone(),
        points,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoothing_is_the_trailing_mean() {
        let s = Series {
            name: "a".into(),
            points: vec![(1.0, 1.0), (2.0, 2.0), (3.0, 3.0), (4.0, 6.0)],
        };
        let ys: Vec<f64> = smoothed(&s, 3).points.iter().map(|p| p.1).collect();
        assert_eq!(ys, [1.0, 1.5, 2.0, 11.0 / 3.0]);
        assert_eq!(smoothed(&s, 1).points, s.points);
    }

    #[test]
    fn series_arguments_split_name_files_and_optional_x() {
        let a: SeriesArg = "lora r=8=512:a.json,b.json".parse().unwrap();
        assert_eq!(a.name, "lora r");
        let files: Vec<_> = a.files.iter().map(|f| (f.x, f.path.clone())).collect();
        assert_eq!(
            files,
            [
                (None, PathBuf::from("8=512:a.json")),
                (None, PathBuf::from("b.json"))
            ]
        );
        let a: SeriesArg = "base=512:ev/base.json".parse().unwrap();
        assert_eq!(a.files[0].x, Some(512.0));
        assert_eq!(a.files[0].path, PathBuf::from("ev/base.json"));
        assert!("base".parse::<SeriesArg>().is_err());
        assert!("=a.json".parse::<SeriesArg>().is_err());
        assert!("base=".parse::<SeriesArg>().is_err());
    }
}
