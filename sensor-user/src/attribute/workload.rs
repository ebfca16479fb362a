//! The unit a baseline is learned for, and how a CI job is recognised from an environment.

use serde::{Deserialize, Serialize};

/// What kind of thing a [`Workload`] is; maps one to one onto `sensor.v1.WorkloadKind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadKind {
    /// A cgroup that is neither a systemd unit nor a container: `cgroup:<path>`.
    Cgroup,
    /// A systemd service or scope: `unit:<name>`.
    SystemdUnit,
    /// A container (docker, containerd/CRI, CRI-O, podman, kubernetes): `container:<id>`.
    Container,
    /// A GitHub Actions job: `github:<repository>/<workflow>/<job>`.
    GithubJob,
    /// A GitLab CI job: `gitlab:<project>/<job>`.
    GitlabJob,
}

/// The workload an event is attributed to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Workload {
    /// Canonical id, the key of the workload's baseline (see `sensor.v1.Workload.id`).
    pub id: String,
    pub kind: WorkloadKind,
    /// The CI run for CI jobs (`GITHUB_RUN_ID[.GITHUB_RUN_ATTEMPT]`, `CI_JOB_ID`); `None` otherwise.
    pub run_id: Option<String>,
}

impl Workload {
    pub fn new(kind: WorkloadKind, id: String) -> Self {
        Workload {
            id,
            kind,
            run_id: None,
        }
    }
}

/// The CI job an environment (`KEY=VALUE` strings, as passed to `execve`) belongs to, if it holds a
/// complete set of GitHub Actions or GitLab CI variables.
///
/// Complete means `GITHUB_REPOSITORY`, `GITHUB_WORKFLOW` and `GITHUB_JOB` (run:
/// `GITHUB_RUN_ID`, with `.GITHUB_RUN_ATTEMPT` appended when set), or `CI_PROJECT_PATH` and
/// `CI_JOB_NAME` (run: `CI_JOB_ID`), all non-empty. GitHub wins when both are present. Like
/// `getenv`, the first occurrence of a repeated key counts.
pub fn ci_job_from_env<S: AsRef<str>>(env: &[S]) -> Option<Workload> {
    let get = |key: &str| {
        env.iter().find_map(|entry| {
            let (k, v) = entry.as_ref().split_once('=')?;
            (k == key).then_some(v)
        })
    };
    let non_empty = |key: &str| get(key).filter(|v| !v.is_empty());

    if let (Some(repo), Some(workflow), Some(job)) = (
        non_empty("GITHUB_REPOSITORY"),
        non_empty("GITHUB_WORKFLOW"),
        non_empty("GITHUB_JOB"),
    ) {
        let run_id = non_empty("GITHUB_RUN_ID").map(|run| match non_empty("GITHUB_RUN_ATTEMPT") {
            Some(attempt) => format!("{run}.{attempt}"),
            None => run.to_owned(),
        });
        return Some(Workload {
            id: format!("github:{repo}/{workflow}/{job}"),
            kind: WorkloadKind::GithubJob,
            run_id,
        });
    }
    if let (Some(project), Some(job)) = (non_empty("CI_PROJECT_PATH"), non_empty("CI_JOB_NAME")) {
        return Some(Workload {
            id: format!("gitlab:{project}/{job}"),
            kind: WorkloadKind::GitlabJob,
            run_id: non_empty("CI_JOB_ID").map(str::to_owned),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn github_env() -> Vec<&'static str> {
        vec![
            "PATH=/usr/bin",
            "GITHUB_REPOSITORY=acme/app",
            "GITHUB_WORKFLOW=ci",
            "GITHUB_JOB=build",
            "GITHUB_RUN_ID=123",
            "GITHUB_RUN_ATTEMPT=1",
        ]
    }

    #[test]
    fn github_job_with_attempt() {
        let job = ci_job_from_env(&github_env()).expect("github job");
        assert_eq!(job.id, "github:acme/app/ci/build");
        assert_eq!(job.kind, WorkloadKind::GithubJob);
        assert_eq!(job.run_id.as_deref(), Some("123.1"));
    }

    #[test]
    fn github_job_without_attempt_or_run() {
        let mut env = github_env();
        env.retain(|e| !e.starts_with("GITHUB_RUN_ATTEMPT"));
        assert_eq!(
            ci_job_from_env(&env).unwrap().run_id.as_deref(),
            Some("123")
        );
        env.retain(|e| !e.starts_with("GITHUB_RUN_ID"));
        assert_eq!(ci_job_from_env(&env).unwrap().run_id, None);
    }

    #[test]
    fn incomplete_github_set_is_no_job() {
        for missing in ["GITHUB_REPOSITORY", "GITHUB_WORKFLOW", "GITHUB_JOB"] {
            let mut env = github_env();
            env.retain(|e| !e.starts_with(missing));
            assert_eq!(ci_job_from_env(&env), None, "without {missing}");
        }
        assert_eq!(
            ci_job_from_env(&["GITHUB_REPOSITORY=", "GITHUB_WORKFLOW=ci", "GITHUB_JOB=b"]),
            None
        );
    }

    #[test]
    fn gitlab_job() {
        let env = [
            "CI_PROJECT_PATH=group/proj",
            "CI_JOB_NAME=test",
            "CI_JOB_ID=987",
        ];
        let job = ci_job_from_env(&env).expect("gitlab job");
        assert_eq!(job.id, "gitlab:group/proj/test");
        assert_eq!(job.kind, WorkloadKind::GitlabJob);
        assert_eq!(job.run_id.as_deref(), Some("987"));
    }

    #[test]
    fn github_wins_over_gitlab_and_first_key_counts() {
        let mut env = vec!["CI_PROJECT_PATH=g/p", "CI_JOB_NAME=j", "GITHUB_JOB=first"];
        env.extend(github_env());
        let job = ci_job_from_env(&env).unwrap();
        assert_eq!(job.id, "github:acme/app/ci/first");
    }

    #[test]
    fn no_ci_variables() {
        assert_eq!(ci_job_from_env(&["HOME=/root", "NOEQUALS"]), None);
    }
}
