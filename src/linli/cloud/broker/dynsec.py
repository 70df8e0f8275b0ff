"""The identities' rights as the config of Mosquitto's dynamic-security plugin.

Mosquitto 2.0's `acl_file` never checks a SUBSCRIBE: any client may subscribe to anything, and
the ACL is applied only when a message is delivered. For a shared subscription that is too late:
a camera that joins `$share/linli-notifier/linli/alerts/#` is handed its turn of the alerts,
which the ACL then drops, and the notifier never sees them. The dynamic-security plugin (in
Debian's `mosquitto` package) checks each subscription against the identity's roles, the
`$share/GROUP/` prefix included, and pins a client to one client id. So it holds the rights;
the password file still holds the passwords, because a SIGHUP reloads that file and not this
one (a user the plugin does not know may connect and do nothing: every default denies).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from linli.cloud.broker.identities import Access, Identity

DEFAULTS = {
    "publishClientSend": False,
    "publishClientReceive": False,
    "subscribe": False,
    "unsubscribe": True,
}
# Checked first to last by priority: the groups a role names, then no other group (a pattern
# `#` matches `$share/...` in the plugin), then the rest.
GROUP_PRIORITY, NO_GROUP_PRIORITY = 2, 1


def _acl(acltype: str, topic: str, *, allow: bool = True, priority: int = 0) -> dict[str, Any]:
    return {"acltype": acltype, "topic": topic, "priority": priority, "allow": allow}


def role_acls(ident: Identity) -> list[dict[str, Any]]:
    """One identity's rights: what it may send, receive and subscribe to."""
    acls = [_acl("subscribePattern", "$share/#", allow=False, priority=NO_GROUP_PRIORITY)]
    for rule in ident.rules:
        if rule.access in (Access.WRITE, Access.READWRITE):
            acls.append(_acl("publishClientSend", rule.topic))
        if rule.access in (Access.READ, Access.READWRITE):
            priority = GROUP_PRIORITY if rule.group else 0
            acls.append(_acl("subscribePattern", rule.filter, priority=priority))
            acls.append(_acl("publishClientReceive", rule.topic))
    return acls


def config(identities: Iterable[Identity]) -> str:
    """The plugin's JSON: a client and a role per identity, no passwords, every default denied."""
    clients: list[dict[str, Any]] = []
    roles: list[dict[str, Any]] = []
    for ident in identities:
        client: dict[str, Any] = {"username": ident.name, "textName": str(ident.role)}
        if ident.client_id:
            client["clientid"] = ident.client_id
        client["roles"] = [{"rolename": ident.name}]
        clients.append(client)
        roles.append({"rolename": ident.name, "acls": role_acls(ident)})
    doc = {"defaultACLAccess": DEFAULTS, "clients": clients, "groups": [], "roles": roles}
    return json.dumps(doc, indent=1) + "\n"
