//! The rule-based analysis: normalise the services' outputs into signals, apply reasoning
//! rules, and produce one diagnosis (findings, prioritised recommendations, confidence).
//! Needs no network; an LLM narrative, when configured, is added on top by the consumer.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How a signal reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Fine.
    Good,
    /// Worth attention.
    Warn,
    /// A problem.
    Bad,
}

/// One normalised measurement taken from a service's output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// Stable name, e.g. `vitals.lcp_ms`.
    pub name: String,
    /// The service it came from.
    pub service: String,
    /// The value.
    pub value: f64,
    /// How it reads.
    pub health: Health,
}

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Fix first.
    Critical,
    /// Fix soon.
    High,
    /// Plan it.
    Medium,
    /// Nice to have.
    Low,
}

/// Something the rules concluded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable rule id, e.g. `slow_lcp`.
    pub id: String,
    /// Severity.
    pub severity: Severity,
    /// Services whose signals support it.
    pub services: Vec<String>,
    /// One line.
    pub title: String,
    /// The evidence, in words.
    pub detail: String,
}

/// What to do, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// 1 = do first.
    pub priority: u32,
    /// The action.
    pub action: String,
    /// The finding it addresses.
    pub finding_id: String,
}

/// The diagnosis written as the run's one `diagnosis` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    /// The domain analysed.
    pub domain: String,
    /// 0–100 over the signals that were available.
    pub overall_score: u32,
    /// `healthy`, `needs_attention` or `critical`.
    pub overall_status: String,
    /// Findings, most severe first.
    pub findings: Vec<Finding>,
    /// Recommendations, priority 1 first.
    pub recommendations: Vec<Recommendation>,
    /// 0–1, reduced by missing services.
    pub confidence: f64,
    /// Services whose data is missing (failed, timed out, skipped, cancelled).
    pub missing_services: Vec<String>,
    /// The signals the rules read.
    pub signals: Vec<Signal>,
    /// `rules`, or `rules+llm` when an LLM narrative was added.
    pub synthesis: String,
    /// The LLM's narrative, when one was obtained.
    pub narrative: Option<String>,
    /// Why the LLM narrative is missing although one was configured.
    pub synthesis_error: Option<String>,
    /// What the LLM was asked and what it used, when one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<crate::llm::Usage>,
}

fn num(output: &Value, key: &str) -> Option<f64> {
    match &output[key] {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

/// `(signal name, output key, bad if, warn if)`: thresholds per known service output.
type Threshold = (&'static str, &'static str, fn(f64) -> Health);

fn lower_is_worse(bad: f64, warn: f64) -> impl Fn(f64) -> Health {
    move |v| {
        if v < bad {
            Health::Bad
        } else if v < warn {
            Health::Warn
        } else {
            Health::Good
        }
    }
}

fn thresholds(service: &str) -> Vec<Threshold> {
    match service {
        "technical-seo" => vec![
            ("technical.health_score", "health_score", |v| lower_is_worse(60.0, 80.0)(v)),
            ("technical.crawl_errors", "crawl_errors", |v| {
                if v > 20.0 {
                    Health::Bad
                } else if v > 5.0 {
                    Health::Warn
                } else {
                    Health::Good
                }
            }),
            ("technical.broken_links", "broken_links", |v| {
                if v > 30.0 {
                    Health::Bad
                } else if v > 10.0 {
                    Health::Warn
                } else {
                    Health::Good
                }
            }),
            ("technical.missing_meta_descriptions", "missing_meta_descriptions", |v| {
                if v > 50.0 {
                    Health::Warn
                } else {
                    Health::Good
                }
            }),
            ("technical.https", "https", |v| if v < 1.0 { Health::Bad } else { Health::Good }),
            ("technical.mobile_friendly", "mobile_friendly", |v| if v < 1.0 { Health::Bad } else { Health::Good }),
        ],
        "vitals-monitor" => vec![
            ("vitals.lcp_ms", "lcp_ms", |v| {
                if v > 4000.0 {
                    Health::Bad
                } else if v > 2500.0 {
                    Health::Warn
                } else {
                    Health::Good
                }
            }),
            ("vitals.cls", "cls", |v| {
                if v > 0.25 {
                    Health::Bad
                } else if v > 0.1 {
                    Health::Warn
                } else {
                    Health::Good
                }
            }),
            ("vitals.inp_ms", "inp_ms", |v| {
                if v > 500.0 {
                    Health::Bad
                } else if v > 200.0 {
                    Health::Warn
                } else {
                    Health::Good
                }
            }),
            ("vitals.performance_score", "performance_score", |v| lower_is_worse(50.0, 90.0)(v)),
        ],
        "domain-authority" => vec![
            ("authority.domain_authority", "domain_authority", |v| lower_is_worse(20.0, 40.0)(v)),
            ("authority.spam_score", "spam_score", |v| {
                if v > 15.0 {
                    Health::Bad
                } else if v > 7.0 {
                    Health::Warn
                } else {
                    Health::Good
                }
            }),
        ],
        "serp-intelligence" => vec![
            ("serp.avg_position", "avg_position", |v| {
                if v > 20.0 {
                    Health::Bad
                } else if v > 10.0 {
                    Health::Warn
                } else {
                    Health::Good
                }
            }),
            ("serp.visibility_score", "visibility_score", |v| lower_is_worse(25.0, 50.0)(v)),
        ],
        "competitive-intelligence" => vec![
            ("competition.share_of_voice", "share_of_voice", |v| lower_is_worse(10.0, 25.0)(v)),
            ("competition.gap_keywords", "gap_keywords", |v| {
                if v > 150.0 {
                    Health::Bad
                } else if v > 50.0 {
                    Health::Warn
                } else {
                    Health::Good
                }
            }),
        ],
        _ => Vec::new(),
    }
}

/// Normalises every completed service's output into signals (unknown keys are ignored).
pub fn extract_signals(outputs: &[(String, Value)]) -> Vec<Signal> {
    let mut signals = Vec::new();
    for (service, output) in outputs {
        for (name, key, judge) in thresholds(service) {
            if let Some(value) = num(output, key) {
                signals.push(Signal { name: name.to_string(), service: service.clone(), value, health: judge(value) });
            }
        }
    }
    signals
}

struct Rule {
    id: &'static str,
    signals: &'static [&'static str],
    title: &'static str,
    action: &'static str,
}

const RULES: [Rule; 9] = [
    Rule {
        id: "insecure_site",
        signals: &["technical.https"],
        title: "The site is not served over HTTPS",
        action: "Serve every page over HTTPS and redirect HTTP to it.",
    },
    Rule {
        id: "not_mobile_friendly",
        signals: &["technical.mobile_friendly"],
        title: "Pages are not mobile friendly",
        action: "Adopt a responsive layout and fix mobile usability errors.",
    },
    Rule {
        id: "poor_technical_health",
        signals: &["technical.health_score", "technical.crawl_errors", "technical.broken_links"],
        title: "Technical health is holding rankings back",
        action: "Fix crawl errors and broken links, then re-crawl.",
    },
    Rule {
        id: "slow_pages",
        signals: &["vitals.lcp_ms", "vitals.inp_ms", "vitals.performance_score"],
        title: "Pages load or respond slowly",
        action: "Optimise the largest contentful element and long main-thread tasks.",
    },
    Rule {
        id: "layout_shift",
        signals: &["vitals.cls"],
        title: "Layout shifts while pages load",
        action: "Reserve space for images, ads and embeds to stop layout shifts.",
    },
    Rule {
        id: "weak_authority",
        signals: &["authority.domain_authority", "authority.spam_score"],
        title: "Domain authority is weak or the link profile is risky",
        action: "Earn links from relevant sites and disavow spammy ones.",
    },
    Rule {
        id: "low_visibility",
        signals: &["serp.avg_position", "serp.visibility_score"],
        title: "Search visibility is low",
        action: "Target keywords ranking 11–20 with improved content and internal links.",
    },
    Rule {
        id: "losing_to_competitors",
        signals: &["competition.share_of_voice", "competition.gap_keywords"],
        title: "Competitors own keywords this site does not",
        action: "Build content for the highest-value gap keywords.",
    },
    Rule {
        id: "thin_metadata",
        signals: &["technical.missing_meta_descriptions"],
        title: "Many pages lack meta descriptions",
        action: "Write unique meta descriptions for the top pages.",
    },
];

/// Applies the rules to the signals: a rule fires when any of its signals is not good; its
/// severity follows the worst signal and how many are bad.
pub fn apply_rules(signals: &[Signal]) -> Vec<Finding> {
    let mut findings = Vec::new();
    for rule in &RULES {
        let matched: Vec<&Signal> =
            signals.iter().filter(|s| rule.signals.contains(&s.name.as_str()) && s.health != Health::Good).collect();
        if matched.is_empty() {
            continue;
        }
        let bad = matched.iter().filter(|s| s.health == Health::Bad).count();
        let severity = match (bad, rule.id) {
            (b, "insecure_site") if b > 0 => Severity::Critical,
            (b, _) if b >= 2 => Severity::Critical,
            (1, _) => Severity::High,
            _ if matched.len() >= 2 => Severity::Medium,
            _ => Severity::Low,
        };
        let mut services: Vec<String> = matched.iter().map(|s| s.service.clone()).collect();
        services.dedup();
        let detail = matched
            .iter()
            .map(|s| format!("{} = {} ({:?})", s.name, s.value, s.health).to_lowercase())
            .collect::<Vec<_>>()
            .join("; ");
        findings.push(Finding { id: rule.id.to_string(), severity, services, title: rule.title.to_string(), detail });
    }
    findings.sort_by(|a, b| a.severity.cmp(&b.severity).then_with(|| a.id.cmp(&b.id)));
    findings
}

/// The recommendation for each finding, in finding order (most severe first).
pub fn recommend(findings: &[Finding]) -> Vec<Recommendation> {
    findings
        .iter()
        .enumerate()
        .filter_map(|(i, f)| {
            let rule = RULES.iter().find(|r| r.id == f.id)?;
            Some(Recommendation { priority: i as u32 + 1, action: rule.action.to_string(), finding_id: f.id.clone() })
        })
        .collect()
}

/// 0–100: the share of signals that read good, with warnings counting half.
pub fn overall_score(signals: &[Signal]) -> u32 {
    if signals.is_empty() {
        return 0;
    }
    let points: f64 = signals
        .iter()
        .map(|s| match s.health {
            Health::Good => 1.0,
            Health::Warn => 0.5,
            Health::Bad => 0.0,
        })
        .sum();
    ((points / signals.len() as f64) * 100.0).round() as u32
}

/// The whole rule-based diagnosis. `outputs`: (service, output) of completed services;
/// `missing`: services without data; `confidence`: from the run summary.
pub fn diagnose(domain: &str, outputs: &[(String, Value)], missing: &[String], confidence: f64) -> Diagnosis {
    let signals = extract_signals(outputs);
    let findings = apply_rules(&signals);
    let recommendations = recommend(&findings);
    let score = overall_score(&signals);
    let overall_status =
        if findings.iter().any(|f| f.severity == Severity::Critical) || (score < 50 && !signals.is_empty()) {
            "critical"
        } else if findings.is_empty() {
            "healthy"
        } else {
            "needs_attention"
        };
    Diagnosis {
        domain: domain.to_string(),
        overall_score: score,
        overall_status: overall_status.to_string(),
        findings,
        recommendations,
        confidence,
        missing_services: missing.to_vec(),
        signals,
        synthesis: "rules".to_string(),
        narrative: None,
        synthesis_error: None,
        llm: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn outputs(pairs: &[(&str, Value)]) -> Vec<(String, Value)> {
        pairs.iter().map(|(s, v)| (s.to_string(), v.clone())).collect()
    }

    #[test]
    fn healthy_outputs_give_no_findings() {
        let o = outputs(&[
            (
                "technical-seo",
                json!({"health_score": 95, "crawl_errors": 0, "broken_links": 1, "https": true, "mobile_friendly": true}),
            ),
            ("vitals-monitor", json!({"lcp_ms": 1800, "cls": 0.02, "inp_ms": 120, "performance_score": 95})),
        ]);
        let d = diagnose("example.com", &o, &[], 1.0);
        assert_eq!(d.findings, vec![]);
        assert_eq!(d.overall_status, "healthy");
        assert_eq!(d.overall_score, 100);
    }

    #[test]
    fn an_insecure_site_is_critical_and_recommended_first() {
        let o = outputs(&[
            ("technical-seo", json!({"health_score": 90, "https": false, "mobile_friendly": true})),
            ("vitals-monitor", json!({"lcp_ms": 3000, "cls": 0.05, "inp_ms": 150, "performance_score": 92})),
        ]);
        let d = diagnose("example.com", &o, &["domain-authority".to_string()], 0.8);
        assert_eq!(d.findings[0].id, "insecure_site");
        assert_eq!(d.findings[0].severity, Severity::Critical);
        assert_eq!(d.recommendations[0].priority, 1);
        assert_eq!(d.recommendations[0].finding_id, "insecure_site");
        assert_eq!(d.overall_status, "critical");
        assert_eq!(d.missing_services, vec!["domain-authority"]);
        let slow = d.findings.iter().find(|f| f.id == "slow_pages").expect("slow pages finding");
        assert_eq!(slow.severity, Severity::Low, "one warning only");
    }

    #[test]
    fn unknown_services_and_keys_are_ignored() {
        let o = outputs(&[("bitware-content-granulator", json!({"structure": {"modules": 3}}))]);
        let d = diagnose("x.org", &o, &[], 1.0);
        assert!(d.signals.is_empty());
        assert_eq!(d.overall_score, 0);
        assert_eq!(d.overall_status, "healthy");
    }
}
