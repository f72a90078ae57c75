//! The set of jobs: the shipped KPI jobs, plus `*.sql` files of the jobs folder (a file named
//! like a shipped job replaces it), minus the disabled ones; checked for unknown dependencies
//! and cycles, and kept in dependency order.

use std::path::Path;

use chrono_tz::Tz;

use crate::spec::{Dependency, JobSpec};

/// The jobs gamelake ships (shared/KPI.md), as files a user can read, copy and change.
pub const BUILTIN: [(&str, &str); 7] = [
    ("first_days.sql", include_str!("../sql/first_days.sql")),
    ("dau.sql", include_str!("../sql/dau.sql")),
    ("revenue.sql", include_str!("../sql/revenue.sql")),
    ("retention.sql", include_str!("../sql/retention.sql")),
    ("ccu.sql", include_str!("../sql/ccu.sql")),
    ("item_economy.sql", include_str!("../sql/item_economy.sql")),
    (
        "currency_flow.sql",
        include_str!("../sql/currency_flow.sql"),
    ),
];

/// Jobs in dependency order (a job after the jobs it depends on).
#[derive(Debug, Clone, Default)]
pub struct Jobs {
    jobs: Vec<JobSpec>,
}

impl Jobs {
    /// The shipped jobs (if `builtin`), then the files of `dir` (if it exists), without the
    /// `disabled` names.
    pub fn load(
        dir: Option<&Path>,
        builtin: bool,
        disabled: &[String],
        tz: Tz,
    ) -> Result<Self, String> {
        let mut jobs: Vec<JobSpec> = Vec::new();
        let mut add = |job: JobSpec| match jobs.iter_mut().find(|j| j.name == job.name) {
            Some(slot) => *slot = job,
            None => jobs.push(job),
        };
        if builtin {
            for (file, text) in BUILTIN {
                let stem = file.trim_end_matches(".sql");
                add(JobSpec::parse(&format!("builtin:{file}"), stem, text, tz)?);
            }
        }
        if let Some(dir) = dir.filter(|d| d.is_dir()) {
            let mut files: Vec<_> = std::fs::read_dir(dir)
                .map_err(|e| format!("reading jobs folder `{}`: {e}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "sql"))
                .collect();
            files.sort();
            for path in files {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("reading `{}`: {e}", path.display()))?;
                let stem = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or("job")
                    .to_string();
                add(JobSpec::parse(
                    &path.display().to_string(),
                    &stem,
                    &text,
                    tz,
                )?);
            }
        }
        jobs.retain(|j| !disabled.contains(&j.name));
        Self::ordered(jobs)
    }

    /// Checks dependencies and sorts (stable: file order among independent jobs).
    pub fn ordered(jobs: Vec<JobSpec>) -> Result<Self, String> {
        for job in &jobs {
            for dep in job.upstream_jobs() {
                if !jobs.iter().any(|j| j.name == dep) {
                    return Err(format!(
                        "job `{}` ({}) depends on job `{dep}`, which does not exist or is disabled",
                        job.name, job.source
                    ));
                }
                let upstream = jobs.iter().find(|j| j.name == dep).expect("checked above");
                if upstream.granularity != job.granularity {
                    return Err(format!(
                        "job `{}` depends on job `{dep}`, which builds {:?} partitions, not {:?}",
                        job.name, upstream.granularity, job.granularity
                    ));
                }
            }
        }
        let mut done: Vec<JobSpec> = Vec::new();
        let mut left = jobs;
        while !left.is_empty() {
            let ready = left
                .iter()
                .position(|j| j.upstream_jobs().all(|d| done.iter().any(|x| x.name == d)));
            match ready {
                Some(i) => done.push(left.remove(i)),
                None => {
                    let names: Vec<&str> = left.iter().map(|j| j.name.as_str()).collect();
                    return Err(format!(
                        "jobs depend on each other in a cycle: {}",
                        names.join(", ")
                    ));
                }
            }
        }
        Ok(Self { jobs: done })
    }

    pub fn all(&self) -> &[JobSpec] {
        &self.jobs
    }

    pub fn get(&self, name: &str) -> Option<&JobSpec> {
        self.jobs.iter().find(|j| j.name == name)
    }

    /// `get`, or an error listing the jobs there are.
    pub fn find(&self, name: &str) -> Result<&JobSpec, String> {
        self.get(name).ok_or_else(|| {
            let names: Vec<&str> = self.jobs.iter().map(|j| j.name.as_str()).collect();
            format!("no job `{name}`; the jobs are: {}", names.join(", "))
        })
    }

    /// The jobs that list `name` among their dependencies.
    pub fn downstream(&self, name: &str) -> Vec<&JobSpec> {
        self.jobs
            .iter()
            .filter(|j| j.depends_on.contains(&Dependency::Job(name.to_string())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_jobs_parse_in_dependency_order() {
        let jobs = Jobs::load(None, true, &[], chrono_tz::Asia::Seoul).unwrap();
        let names: Vec<&str> = jobs.all().iter().map(|j| j.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "first_days",
                "dau",
                "revenue",
                "retention",
                "ccu",
                "item_economy",
                "currency_flow"
            ]
        );
        assert_eq!(jobs.downstream("dau")[0].name, "revenue");
    }

    #[test]
    fn folder_overrides_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("dau.sql"),
            "-- description: mine\nSELECT :date AS event_date",
        )
        .unwrap();
        let jobs = Jobs::load(Some(dir.path()), true, &["ccu".into()], chrono_tz::UTC).unwrap();
        assert_eq!(jobs.get("dau").unwrap().description, "mine");
        assert!(jobs.get("ccu").is_none());
        // Disabling a job another depends on is an error naming both.
        let e = Jobs::load(None, true, &["dau".into()], chrono_tz::UTC).unwrap_err();
        assert!(e.contains("`revenue`") && e.contains("`dau`"), "{e}");
        std::fs::write(dir.path().join("a.sql"), "-- depends_on: b\nSELECT 1").unwrap();
        std::fs::write(dir.path().join("b.sql"), "-- depends_on: a\nSELECT 1").unwrap();
        let e = Jobs::load(Some(dir.path()), false, &[], chrono_tz::UTC).unwrap_err();
        assert!(e.contains("cycle"), "{e}");
    }
}
