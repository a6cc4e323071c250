#!/usr/bin/python
# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation and argument spec of the report action plugin."""

from __future__ import annotations

DOCUMENTATION = r"""
module: report
short_description: Expiry report of an environment's secrets (controller side)
description:
  - For every secret of the environment (the catalog's, and any the store holds that the catalog does not list) it reports
    version, age, the policy's C(max_age_days), the next due date, a stored certificate's C(not_after), and the last
    rotation's time and outcome and the failures counted from the audit log.
  - The audit log (C(keywarden_audit_log), default C(<store dir>/audit.log)) is verified first, with MACs when the key
    file exists; a log that does not verify is reported and only its verified lines are used.
  - A secret needs attention (an alert) when it is older than its maximum age; when a stored certificate has less than
    a third of its lifetime left, expires within O(alert_days) or has expired; when it is in the catalog but not in the
    store; or when its certificate does not parse. See docs/security/secrets/monitoring.md.
  - Writes a table, JSON, a Prometheus textfile for node_exporter's textfile collector and a self-contained HTML page
    (atomically, mode 0644, as they hold no value), and can POST the alert as JSON to a webhook.
  - Returns names, kinds, versions, dates and statuses; never a value. Writes nothing and notifies nobody in check mode.
author: keywarden contributors (@keywarden)
attributes:
  check_mode:
    support: full
    description: Builds the report and writes no file.
  diff_mode:
    support: none
    description: Results hold names and counts, never file contents or values.
options:
  dest:
    description: Directory that receives C(keywarden_secrets_<env>.txt), C(.json) and C(.html) (and the textfile unless O(textfile_dir)).
    type: path
    required: true
  textfile_dir:
    description: Directory of node_exporter's textfile collector (C(--collector.textfile.directory)) for C(keywarden_secrets_<env>.prom).
    type: path
  formats:
    description: Which outputs to write.
    type: list
    elements: str
    default: [table, json, prometheus, html]
    choices: [table, json, prometheus, html]
  alert_days:
    description: Alert window in days before a due date or a certificate's C(not_after).
    type: float
    default: 14
  webhook_url:
    description: URL that receives the alert as a JSON POST; its path may be a credential, so it is never shown.
    type: str
  webhook_token_secret:
    description: C(NAME.FIELD) of a store secret sent as C(Authorization Bearer) token; the read is audited.
    type: str
  webhook_on:
    description: When to POST.
    type: str
    default: alert
    choices: [alert, always, never]
  catalog_path:
    description: Catalog file; defaults to C(keywarden_catalog_path).
    type: str
  environment:
    description: Environment and vault ID; defaults to C(keywarden_environment).
    type: str
  store_dir:
    description: Store directory; defaults to C(keywarden_store_dir).
    type: str
"""

EXAMPLES = r"""
- name: Report on the secrets of this environment
  keywarden.secrets.report:
    dest: /var/lib/keywarden/report
    textfile_dir: /var/lib/prometheus/node-exporter
    alert_days: 14
  register: report
"""

RETURN = r"""
report:
  description: The full report (environment, audit log state, one item per secret with its dates and status, alerts).
  type: dict
  returned: success
alert:
  description: Whether something needs attention (an alert, or an audit log that does not verify).
  type: bool
  returned: success
alerts:
  description: Names of the secrets that need attention.
  type: list
  elements: str
  returned: success
problems:
  description: Problems that are not about one secret (the audit log does not verify).
  type: list
  elements: str
  returned: success
table:
  description: The report as text lines.
  type: list
  elements: str
  returned: success
files:
  description: Files written.
  type: list
  elements: str
  returned: success
textfile:
  description: Path of the Prometheus textfile, when written (or planned, in check mode).
  type: str
  returned: success
webhook:
  description: Whether the webhook was notified, and its HTTP status.
  type: dict
  returned: success
"""

from ansible_collections.keywarden.secrets.plugins.module_utils.specs import controller_only


def main() -> None:
    controller_only("report")


if __name__ == "__main__":
    main()
