#!/usr/bin/python
# Copyright: keywarden contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Write a host's .env files in one call: atomically, mode 0600, only those that differ. Runs on the host."""

from __future__ import annotations

DOCUMENTATION = r"""
module: env_files
short_description: Write a host's .env files from the keywarden store in one call (mode 0600, atomic, only when they differ)
description:
  - A task C(keywarden.secrets.env_files) runs its action plugin on the controller. The action plans the host's files
    from the catalog (one C(<service>.env) per service whose consumer group the host is in, holding only the variables
    that service consumes), reads the store once, resolves every value at stage C(live) before anything is written,
    renders the files, then runs this module on the host once with the rendered files in O(files).
  - The module ensures the directory O(dir) (mode O(dir_mode), owner O(dir_owner), group O(dir_group)), then writes
    each file of O(files) into it with mode C(0600), owner O(owner) and group O(group), only when its content, mode,
    owner or group differ. A write is atomic and durable (a temp file in the same directory, created C(0600), given
    its owner and group, written and fsync'ed, then renamed over the file; the directory is fsync'ed after the renames).
  - After a run that is not in check mode the action records one C(deploy) line per delivered secret field in the
    environment's audit log (see the C(keywarden.secrets.audit) action), and every value it resolved as a C(read)
    before sending it to the host. When the audit log cannot be written the task fails (fail closed).
  - Returns file and service names only, never a value; O(files) is C(no_log). Errors name secrets, fields, files and
    variables, never values. Set C(no_log) and C(diff) off on the task anyway, as role C(keywarden_env) does.
author: keywarden contributors (@keywarden)
attributes:
  check_mode:
    support: full
    description: Reports which files would be written; writes nothing and records no C(deploy) line.
  diff_mode:
    support: none
    description: Results hold names and counts, never file contents or values.
options:
  dir:
    description: Directory that receives one C(<service>.env) per consumed service (role variable C(keywarden_env_dir)).
    type: path
    required: true
  dir_mode:
    description: Mode of O(dir), octal (role variable C(keywarden_env_dir_mode)).
    type: raw
    default: "0750"
  dir_owner:
    description:
      - Owner of O(dir), a user name or number (role variable C(keywarden_env_dir_owner)). Empty means the account the
        module runs as (the one the play connects or becomes as).
    type: str
    default: root
  dir_group:
    description:
      - Group of O(dir), a group name or number. Empty means the primary group of the account the module runs as.
      - Not given, the group of the files (O(group)).
    type: str
  owner:
    description:
      - Owner of the files, a user name or number, normally the account the consuming services run as (role variable
        C(keywarden_env_owner)). Empty means the account the module runs as.
    type: str
    default: root
  group:
    description:
      - Group of the files, a group name or number (role variable C(keywarden_env_group)). Empty means the primary
        group of the account the module runs as.
    type: str
    default: root
  formats:
    description:
      - The format of each service's file, by service name (role variable C(keywarden_env_formats)); a service not
        listed gets C(portable). The action plugin quotes each value so that every consumer of the format reads it
        back byte for byte, and refuses a value the format cannot carry (naming file, variable and secret; nothing
        written). Not used by the module itself.
      - C(portable) is read back by docker compose C(env_file) (v1 and v2), python-dotenv, systemd C(EnvironmentFile=) and
        bash C(set -a; . FILE); it cannot carry a C(${), a trailing backslash, nor a C($) or a backtick together with a
        single quote or a doubled backslash.
      - C(compose) (docker compose v1 and v2) cannot carry a C(${), a trailing backslash, nor a C($) together with a
        backslash and a single quote (or a doubled backslash). C(dotenv) (python-dotenv) cannot carry a C(${) or a
        trailing backslash. C(systemd) and C(shell) carry every printable character.
      - No format carries a control character (line break, NUL, tab). See docs/security/secrets/delivery.md.
    type: dict
    default: {}
  files:
    description:
      - File name (in O(dir), no path) to its full content. Set by the action plugin from the store; do not give it in a
        task. Never logged.
    type: dict
    default: {}
  bundles:
    description:
      - Files delivered together (a certificate, its chain and its key), by bundle name (C(<service>.<secret>), in
        O(dir)) to a mapping of file name to content. Set by the action plugin from the store for the kinds delivered
        as files; do not give it in a task. Never logged.
      - A bundle is a directory C(.<name>@<random>) (mode C(0700), owner O(owner), group O(group)) holding its files
        (mode C(0600)), and C(<name>) is a symbolic link to it. A changed bundle is written to a new directory, which
        the link is then swapped to by one rename, so a consumer never reads a new certificate with an old key. The
        directory the link had before stays (returned in RV(previous)), so that a failed health check can put it back;
        older ones are removed.
    type: dict
    default: {}
notes:
  - An unknown owner or group fails the task before anything is written, naming the role variable to fix.
  - Files of services the host no longer consumes are left in place.
seealso:
  - module: keywarden.secrets.audit
"""

EXAMPLES = r"""
- name: Deliver this host's .env files and restart the consumers whose file changed
  keywarden.secrets.env_files:
    dir: /srv/keywarden
    dir_mode: "0750"
    owner: app
    group: app
  register: delivered
  no_log: true
  diff: false
  notify: Restart systemd consumers whose .env changed

- name: Deliver them as the account the play runs as (no become)
  keywarden.secrets.env_files:
    dir: "{{ playbook_dir }}/../.demo/srv"
    dir_owner: ""
    owner: ""
    group: ""
  no_log: true
  diff: false
"""

RETURN = r"""
changed_files:
  description: Names of the files and bundles written (in check mode, that would be written), sorted.
  type: list
  elements: str
  returned: always
  sample: [app.env]
dir_changed:
  description: Whether O(dir) was created or its mode, owner or group fixed.
  type: bool
  returned: always
dir:
  description: The directory.
  type: str
  returned: always
  sample: /srv/keywarden
services:
  description: (action) The host's services, each with C(service), C(systemd_unit), C(compose_service), C(health_check)
    and C(vars) (variable names and where their values come from, never a value).
  type: list
  elements: dict
  returned: success
results:
  description:
    - (action) One item per service, shaped like the register of a task looping over the services so that handlers can
      select the changed ones; C(item) is the service, C(changed) whether its file was written, C(dest) its path.
  type: list
  elements: dict
  returned: success
  sample: [{item: {service: app, systemd_unit: app.service}, changed: true, dest: /srv/keywarden/app.env}]
previous:
  description:
    - For each bundle written, the directory its link pointed to before (in O(dir)), or null for a new bundle.
  type: dict
  returned: always
  sample: {nginx.web_tls: .nginx.web_tls@k2j4h1}
recorded:
  description: (action) Number of audit lines written for the delivery.
  type: int
  returned: success
"""

import errno
import grp
import os
import pwd
import re
import shutil
import stat
import tempfile

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.keywarden.secrets.plugins.module_utils.specs import ARGUMENT_SPECS

FILE_MODE = 0o600
BUNDLE_DIR_MODE = 0o700
# `.<bundle>@<random>`: `@` is in no bundle name, so one bundle's directories never match another bundle's prefix
BUNDLE_SEP = "@"
# module option -> what an operator sets it with (role keywarden_env), for error messages
ROLE_VARS = {
    "dir_mode": "keywarden_env_dir_mode",
    "dir_owner": "keywarden_env_dir_owner",
    "dir_group": "keywarden_env_group",
    "owner": "keywarden_env_owner",
    "group": "keywarden_env_group",
}
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@+-]*$")


class Refused(Exception):
    """A one-line reason, naming files and options only, to fail the module with."""


def _mode(value):
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 0o7777:
        return value
    text = str(value).strip()
    if re.fullmatch(r"0?[0-7]{3,4}", text):
        return int(text, 8)
    raise Refused(f"dir_mode '{text}' ({ROLE_VARS['dir_mode']}) is not an octal mode such as 0750")


def _where(option):
    return f"{option} ({ROLE_VARS[option]})"


def _uid(value, option):
    if value in (None, ""):
        return os.geteuid()
    if value.isdigit():
        return int(value)
    try:
        return pwd.getpwnam(value).pw_uid
    except KeyError:
        raise Refused(f"{_where(option)} '{value}' is not a user on this host (empty means the account the play runs as); nothing written") from None


def _gid(value, option):
    if value in (None, ""):
        return os.getegid()
    if value.isdigit():
        return int(value)
    try:
        return grp.getgrnam(value).gr_gid
    except KeyError:
        raise Refused(
            f"{_where(option)} '{value}' is not a group on this host (empty means the group of the account the play runs as); nothing written"
        ) from None


def _same_file(path, content, uid, gid):
    """True when path is a regular file (not a symlink) holding exactly content, mode 0600, owned uid:gid."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != FILE_MODE or st.st_uid != uid or st.st_gid != gid or st.st_size != len(content):
        return False
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as handle:
        return handle.read(len(content) + 1) == content


def _write(directory, name, content, uid, gid):
    """Replace directory/name atomically: temp file in the same directory, 0600, owner set before the content.

    Not AnsibleModule.atomic_move: when it creates a file it sets the mode from the umask (0644 here) and the owner
    after the rename, so a new .env file would be readable by everyone for a moment. Here the file is 0600 and owned
    right from its first byte, and the rename is the only step that makes it visible."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        os.fchown(fd, uid, gid)
        view = memoryview(content)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, os.path.join(directory, name))
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _link_target(directory, name):
    """What the bundle's link points to (None when it does not exist); refuse a bundle name that is not a link."""
    path = os.path.join(directory, name)
    try:
        st = os.lstat(path)
        target = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Refused(f"{path} cannot be read ({exc.strerror}); nothing written") from None
    if target is None:
        raise Refused(f"{path} exists and is not a symbolic link (keywarden delivers {name} as a link to a directory of files): move it away; nothing written")
    return target


def _same_bundle(directory, name, target, files, uid, gid):
    """True when the link points to one of the bundle's directories, and that holds exactly these files (content,
    0600, owner) and is 0700, owned uid:gid."""
    if target is None or "/" in target or not target.startswith(f".{name}{BUNDLE_SEP}"):
        return False
    path = os.path.join(directory, target)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(st.st_mode) or stat.S_IMODE(st.st_mode) != BUNDLE_DIR_MODE or st.st_uid != uid or st.st_gid != gid:
        return False
    if sorted(os.listdir(path)) != sorted(files):
        return False
    return all(_same_file(os.path.join(path, name), content, uid, gid) for name, content in files.items())


def _write_bundle(directory, name, files, uid, gid):
    """Write the bundle to a new directory, then swap the link to it with one rename; returns the new directory."""
    new = tempfile.mkdtemp(dir=directory, prefix=f".{name}{BUNDLE_SEP}")
    try:
        os.chown(new, uid, gid)
        os.chmod(new, BUNDLE_DIR_MODE)
        for file_name in sorted(files):
            _write(new, file_name, files[file_name], uid, gid)
        _fsync_dir(new)
        # a fresh name (symlink() fails rather than replace an existing one)
        link = os.path.join(directory, f".{name}{BUNDLE_SEP}link-{os.getpid()}-{os.urandom(6).hex()}")
        os.symlink(os.path.basename(new), link)
        os.replace(link, os.path.join(directory, name))
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    return os.path.basename(new)


def _prune_bundle(directory, name, keep):
    """Remove the bundle's directories (and stray temp links) but the ones in ``keep``."""
    prefix = f".{name}{BUNDLE_SEP}"
    for entry in os.listdir(directory):
        if not entry.startswith(prefix) or entry in keep:
            continue
        path = os.path.join(directory, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


def _fsync_dir(directory):
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unprivileged_hint():
    return (
        f"running as uid {os.geteuid()}, not root: use become, or leave keywarden_env_dir_owner, keywarden_env_owner and"
        " keywarden_env_group empty to deliver as the account the play runs as"
    )


def _check_can_own(uid, gid, what):
    """Refuse, before any change, to give something to an account that only root could give it to."""
    if os.geteuid() == 0:
        return
    if uid != os.geteuid() or gid not in {os.getegid(), *os.getgroups()}:
        raise Refused(f"{what} cannot be given to {uid}:{gid}: {_unprivileged_hint()}; nothing written")


def _ensure_dir(directory, mode, uid, gid, check_mode):
    """Create the directory or fix its mode/owner/group; True when it was (or would be) changed."""
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        _check_can_own(uid, gid, directory)
        if not check_mode:
            os.makedirs(directory, mode=mode)
            os.chown(directory, uid, gid)
            os.chmod(directory, mode)  # makedirs' mode is masked by the umask
        return True
    if not stat.S_ISDIR(st.st_mode):
        raise Refused(f"{directory} exists and is not a directory; nothing written")
    if stat.S_IMODE(st.st_mode) == mode and st.st_uid == uid and st.st_gid == gid:
        return False
    _check_can_own(uid, gid, directory)
    if not check_mode:
        if (st.st_uid, st.st_gid) != (uid, gid):
            os.chown(directory, uid, gid)
        os.chmod(directory, mode)
    return True


def run(module):
    p = module.params
    directory = p["dir"]
    # everything that can be refused is refused before the first change
    files = {}
    for name, content in (p["files"] or {}).items():
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise Refused(f"files: '{name}' is not a plain file name (no directory part, no leading dot); nothing written")
        try:
            files[name] = content.encode("utf-8")
        except (AttributeError, UnicodeError):
            raise Refused(f"files: the content of '{name}' is not UTF-8 text; nothing written") from None
    bundles = {}
    for name, members in (p["bundles"] or {}).items():
        if not isinstance(name, str) or not _NAME_RE.match(name) or BUNDLE_SEP in name or name in files:
            raise Refused(f"bundles: '{name}' is not a plain name (no directory part, no leading dot, no '@', not a file's name); nothing written")
        if not isinstance(members, dict) or not members:
            raise Refused(f"bundles: '{name}' must map file names to contents; nothing written")
        bundles[name] = {}
        for file_name, content in members.items():
            if not isinstance(file_name, str) or not _NAME_RE.match(file_name):
                raise Refused(f"bundles: '{name}/{file_name}' is not a plain file name; nothing written")
            try:
                bundles[name][file_name] = content.encode("utf-8")
            except (AttributeError, UnicodeError):
                raise Refused(f"bundles: the content of '{name}/{file_name}' is not UTF-8 text; nothing written") from None
    dir_mode = _mode(p["dir_mode"])
    uid, gid = _uid(p["owner"], "owner"), _gid(p["group"], "group")
    dir_uid = _uid(p["dir_owner"], "dir_owner")
    dir_gid = _gid(p["group"] if p["dir_group"] is None else p["dir_group"], "dir_group" if p["dir_group"] is not None else "group")
    if files or bundles:
        _check_can_own(uid, gid, f"the files in {directory}")
    # where each bundle's link points now; something else at a bundle's name is refused before any change
    links = {name: _link_target(directory, name) if os.path.isdir(directory) else None for name in sorted(bundles)}

    changed_files = []
    previous = {}
    dir_changed = False
    step = f"{directory} cannot be set up"
    try:
        dir_changed = _ensure_dir(directory, dir_mode, dir_uid, dir_gid, module.check_mode)
        for name in sorted(files):
            path = os.path.join(directory, name)
            content = files[name]
            step = f"{path} cannot be read"
            # in check mode the directory may not exist yet: then every file would be written
            if os.path.isdir(directory) and _same_file(path, content, uid, gid):
                continue
            if not module.check_mode:
                step = f"{path} cannot be written"
                _write(directory, name, content, uid, gid)
            changed_files.append(name)
        for name in sorted(bundles):
            step = f"{os.path.join(directory, name)} cannot be read"
            before = links[name]
            if _same_bundle(directory, name, before, bundles[name], uid, gid):
                continue
            if not module.check_mode:
                step = f"{os.path.join(directory, name)} cannot be written"
                new = _write_bundle(directory, name, bundles[name], uid, gid)
                _prune_bundle(directory, name, {new, before})
            previous[name] = before
            changed_files.append(name)
        if changed_files and not module.check_mode:
            step = f"{directory} cannot be synced"
            _fsync_dir(directory)
    except OSError as exc:
        written = [] if module.check_mode else changed_files
        hint = f"; {_unprivileged_hint()}" if exc.errno in (errno.EPERM, errno.EACCES) and os.geteuid() != 0 else ""
        module.fail_json(
            msg=f"{step} ({exc.strerror or type(exc).__name__}){hint}",
            changed=dir_changed or bool(written),
            changed_files=written,
            previous={} if module.check_mode else previous,
            dir_changed=dir_changed,
            dir=directory,
        )
    changed_files.sort()
    return {"changed": dir_changed or bool(changed_files), "changed_files": changed_files, "previous": previous, "dir_changed": dir_changed, "dir": directory}


def main():
    module = AnsibleModule(
        # the action's options (shared table), plus the rendered files it adds; `formats` is only the action's
        argument_spec={
            **ARGUMENT_SPECS["env_files"],
            "files": {"type": "dict", "default": {}, "no_log": True},
            "bundles": {"type": "dict", "default": {}, "no_log": True},
        },
        supports_check_mode=True,
    )
    try:
        result = run(module)
    except Refused as exc:
        module.fail_json(msg=str(exc), changed=False, changed_files=[], previous={}, dir_changed=False, dir=module.params["dir"])
    count = len(result["changed_files"])
    verb = "would be written" if module.check_mode else "written"
    total = len(module.params["files"] or {}) + len(module.params["bundles"] or {})
    module.exit_json(msg=f"{count} of {total} files {verb} in {result['dir']}", **result)


if __name__ == "__main__":
    main()
