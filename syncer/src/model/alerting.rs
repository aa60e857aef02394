//! `tenants/<tenant>/alerting.yaml` and the platform's `alerting.yaml`: where a
//! tenant's alerts go (receivers, a route tree, inhibit rules, time intervals),
//! rendered into the tenant's Mimir Alertmanager configuration.
//!
//! The shape is Alertmanager's own configuration file
//! (<https://prometheus.io/docs/alerting/latest/configuration/>), field for field,
//! with two differences: every credential (webhook URLs, routing keys, passwords)
//! is a reference to a Kubernetes Secret or a mounted file, never a value; and
//! there is no `global:` section (each receiver says what it needs), so one
//! tenant's file means the same whatever the platform's defaults are.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Duration, Loc, SecretRef};

/// `tenants/<tenant>/alerting.yaml`: the tenant's receivers and route tree.
/// Without this file the tenant gets no Alertmanager configuration from MOP.
/// Notification templates go in `tenants/<tenant>/alert-templates/<name>.tmpl`
/// (Go text/template, `{{ define "name" }}…{{ end }}`): every one is sent with the
/// configuration and listed in its `templates`, so receiver fields can use
/// `{{ template "name" . }}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertingFile {
    /// The root of the route tree: its `receiver` gets every alert no child
    /// route takes. The platform's routes (platform `alerting.yaml`) are put in
    /// front of this route's `routes`.
    pub route: Loc<Route>,
    /// Where notifications go. Names are unique within the tenant and differ
    /// from the platform's receivers.
    pub receivers: Vec<Receiver>,
    /// Mute alerts matching `target_matchers` while an alert matching
    /// `source_matchers` fires with the same values of the `equal` labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inhibit_rules: Vec<InhibitRule>,
    /// Named time intervals that routes reference in `mute_time_intervals` and
    /// `active_time_intervals`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub time_intervals: Vec<TimeInterval>,
}

/// The platform's `alerting.yaml` (at the repository root): receivers and routes
/// every tenant gets, e.g. `severity="critical"` → the SRE on-call.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlatformAlertingFile {
    /// Receivers added to every tenant's configuration. Their credentials are
    /// read from MOP's namespace, like the tenants'.
    #[serde(default)]
    pub receivers: Vec<Receiver>,
    /// Routes put first under every tenant's root route. Each must set
    /// `continue: true`, so the alerts they match still reach the tenant's own
    /// routes, and may name only the receivers above.
    #[serde(default)]
    pub routes: Vec<Loc<Route>>,
}

/// A node of the route tree (Alertmanager's `route`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Receiver of the alerts this route takes; children inherit it. Required
    /// on the root route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver: Option<Loc<String>>,
    /// Label matchers in Alertmanager's syntax, all of which an alert must
    /// match: `severity="critical"`, `team=~"pay.*"`, `env!="dev"`. One entry
    /// may hold several, comma-separated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matchers: Vec<Loc<String>>,
    /// Labels that group alerts into one notification; `...` alone groups by
    /// every label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<Vec<Loc<String>>>,
    /// Go on matching the following sibling routes after this one matched.
    #[serde(default, rename = "continue", skip_serializing_if = "Option::is_none")]
    pub continue_: Option<Loc<bool>>,
    /// How long to wait before the first notification of a new group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_wait: Option<Loc<Duration>>,
    /// How long to wait before notifying of alerts added to a group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_interval: Option<Loc<Duration>>,
    /// How long to wait before repeating a notification already sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_interval: Option<Loc<Duration>>,
    /// Names of `time_intervals` during which this route sends nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mute_time_intervals: Vec<Loc<String>>,
    /// Names of `time_intervals` outside of which this route sends nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active_time_intervals: Vec<Loc<String>>,
    /// Child routes, tried in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Loc<Route>>,
}

/// A receiver: a name and one or more notification integrations. A receiver
/// without any integration drops what it gets (a "blackhole").
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Receiver {
    /// Unique name, referenced by routes.
    pub name: Loc<String>,
    /// Slack incoming webhooks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slack_configs: Vec<SlackConfig>,
    /// PagerDuty Events API.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pagerduty_configs: Vec<PagerdutyConfig>,
    /// E-mail over SMTP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub email_configs: Vec<EmailConfig>,
    /// A generic webhook receiving Alertmanager's JSON payload.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhook_configs: Vec<WebhookConfig>,
    /// Opsgenie alerts API.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub opsgenie_configs: Vec<OpsgenieConfig>,
    /// Microsoft Teams incoming webhooks (Alertmanager 0.26 and later).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub msteams_configs: Vec<MsteamsConfig>,
}

/// Slack (<https://prometheus.io/docs/alerting/latest/configuration/#slack_config>).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// Also notify when the alerts resolve (Alertmanager's default: false for Slack).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_resolved: Option<bool>,
    /// The incoming-webhook URL, which carries its own credential: a reference.
    pub api_url: SecretRef,
    /// Channel or user to post to, e.g. `#payments-alerts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Go template of the message title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Go template of the title's link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title_link: Option<String>,
    /// Go template of the message text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Go template of the attachment colour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
}

/// PagerDuty (<https://prometheus.io/docs/alerting/latest/configuration/#pagerduty_config>).
/// Exactly one of `routing_key` (Events API v2) or `service_key` (v1).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PagerdutyConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_resolved: Option<bool>,
    /// Integration key of an Events API v2 integration: a reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<SecretRef>,
    /// Integration key of an Events API v1 integration: a reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_key: Option<SecretRef>,
    /// Events API URL (Alertmanager's default: PagerDuty's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Go template of the incident description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Go template of the severity (`critical`, `error`, `warning`, `info`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// E-mail (<https://prometheus.io/docs/alerting/latest/configuration/#email_config>).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_resolved: Option<bool>,
    /// Recipient addresses, comma-separated.
    pub to: String,
    /// Sender address.
    pub from: Loc<String>,
    /// SMTP server as `host:port`.
    pub smarthost: Loc<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hello: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_username: Option<String>,
    /// SMTP password (PLAIN and LOGIN): a reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_password: Option<SecretRef>,
    /// CRAM-MD5 secret: a reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_secret: Option<SecretRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_identity: Option<String>,
    /// Require STARTTLS (Alertmanager's default: true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_tls: Option<bool>,
    /// Extra headers, e.g. `Subject` (Go templates).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Go template of the HTML body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub html: Option<String>,
    /// Go template of the text body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// A webhook (<https://prometheus.io/docs/alerting/latest/configuration/#webhook_config>).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Also notify when the alerts resolve (Alertmanager's default: true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_resolved: Option<bool>,
    /// Endpoint URL; it often carries a token, so it is a reference.
    pub url: SecretRef,
    /// Most alerts in one message; 0 sends all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_alerts: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_config: Option<HttpConfig>,
}

/// Opsgenie (<https://prometheus.io/docs/alerting/latest/configuration/#opsgenie_config>).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpsgenieConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_resolved: Option<bool>,
    /// API key of an Opsgenie API integration: a reference.
    pub api_key: SecretRef,
    /// API URL (Alertmanager's default: `https://api.opsgenie.com/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Go template giving P1 to P5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// Comma-separated tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Microsoft Teams (<https://prometheus.io/docs/alerting/latest/configuration/#msteams_config>).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MsteamsConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_resolved: Option<bool>,
    /// Incoming-webhook URL, which carries its own credential: a reference.
    pub webhook_url: SecretRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// How a webhook authenticates. Mimir refuses `*_file` settings, TLS files and
/// proxies in tenants' configurations (`pkg/alertmanager/api.go`,
/// `validateReceiverHTTPConfig`), so only these are offered.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<Authorization>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: String,
    /// A reference.
    pub password: SecretRef,
}

/// An `Authorization` header: `<type> <credentials>`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    /// Scheme; Alertmanager's default is `Bearer`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// A reference.
    pub credentials: SecretRef,
}

/// An inhibit rule.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InhibitRule {
    /// Matchers an alert must satisfy to mute others.
    #[serde(default)]
    pub source_matchers: Vec<Loc<String>>,
    /// Matchers of the alerts that are muted.
    #[serde(default)]
    pub target_matchers: Vec<Loc<String>>,
    /// Labels whose values must be equal in the source and target alerts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub equal: Vec<Loc<String>>,
}

/// A named set of time ranges.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeInterval {
    /// Name that routes reference.
    pub name: Loc<String>,
    /// The ranges; a moment is in the interval when it is in any of them.
    pub time_intervals: Vec<TimeRange>,
}

/// One range: a moment is in it when it matches every field that is set.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeRange {
    /// Times of day, `HH:MM` from `start_time` (inclusive) to `end_time`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub times: Vec<TimeOfDay>,
    /// Days or ranges of days: `monday`, `monday:friday`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weekdays: Vec<Loc<String>>,
    /// Days of the month or ranges, `1:5`; negative counts from the end.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days_of_month: Vec<Loc<String>>,
    /// Months or ranges: `january:march`, `1:3`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub months: Vec<Loc<String>>,
    /// Years or ranges: `2026:2027`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub years: Vec<Loc<String>>,
    /// IANA time zone of the times, e.g. `Europe/Berlin`; UTC when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// A range of times of day.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeOfDay {
    /// `HH:MM`, 00:00 to 24:00.
    pub start_time: Loc<String>,
    /// `HH:MM`, after `start_time`.
    pub end_time: Loc<String>,
}

impl Receiver {
    /// Every integration list with its Alertmanager key, for checks that treat
    /// them alike.
    pub fn integration_counts(&self) -> [(&'static str, usize); 6] {
        [
            ("slack_configs", self.slack_configs.len()),
            ("pagerduty_configs", self.pagerduty_configs.len()),
            ("email_configs", self.email_configs.len()),
            ("webhook_configs", self.webhook_configs.len()),
            ("opsgenie_configs", self.opsgenie_configs.len()),
            ("msteams_configs", self.msteams_configs.len()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_example_round_trips() {
        let text = r##"
route:
  receiver: team
  group_by: [alertname, namespace]
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
      continue: true
receivers:
  - name: team
    slack_configs:
      - api_url: {secret: {name: mop-alerting-payments, key: slack-url}}
        channel: "#payments"
  - name: pager
    pagerduty_configs:
      - routing_key: {secret: {name: mop-alerting-payments, key: pagerduty}}
"##;
        let f: AlertingFile = serde_saphyr::from_str(text).unwrap();
        assert_eq!(f.route.value.routes[0].line, 6);
        assert_eq!(f.receivers.len(), 2);
        let again: AlertingFile =
            serde_saphyr::from_str(&serde_saphyr::to_string(&f).unwrap()).unwrap();
        assert_eq!(again.receivers[1].name.value, "pager");
    }

    #[test]
    fn an_inline_webhook_url_is_refused() {
        let text = "route: {receiver: a}\nreceivers:\n  - name: a\n    slack_configs:\n      - api_url: https://hooks.slack.com/services/T0/B0/XXXX\n";
        let err = serde_saphyr::from_str::<AlertingFile>(text).unwrap_err();
        assert!(err.to_string().contains("inline secret"), "{err}");
    }
}
