"""A canary of the front end: a Netlify split test between the production branch and a branch
deploy of the new site, moved step by step, then published or ended.

Netlify divides a site's traffic between branch deploys by percentage (``traffic_splits``);
a site has one split test, which stays (inactive) once unpublished, so :meth:`SplitRollout.start`
updates the one there is rather than making a second. At 100 % :meth:`SplitRollout.finish`
publishes the canary deploy first and ends the split test second, so no moment sends traffic
to the old deploy alone; :meth:`SplitRollout.abort` ends the split test and publishes nothing.

What this depends on at Netlify: split tests work on branch deploys of a site linked to a Git
repository (Netlify's docs); what is checked here is the protocol, against a strict local API.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cnd_toolkit.netlify.api import Deploy, NetlifyClient, NetlifyError, SplitTest

CANARY_BRANCH = "canary"


@dataclass
class SplitRollout:
    client: NetlifyClient
    site_id: str
    production_branch: str = "main"
    canary_branch: str = CANARY_BRANCH
    say: Callable[[str], None] = field(default=lambda line: None)
    test: SplitTest | None = None

    def weights(self, share: int) -> dict[str, int]:
        if not 0 <= share <= 100:
            raise NetlifyError(f"a canary share is a whole percentage in 0..100, not {share}")
        return {self.production_branch: 100 - share, self.canary_branch: share}

    def start(self, share: int) -> SplitTest:
        """``share`` % of the site's traffic to the canary branch: the site's split test, set and on."""
        if self.production_branch == self.canary_branch:
            raise NetlifyError(f"the canary branch cannot be the production branch ({self.production_branch!r})")
        wanted = self.weights(share)
        found = self.client.list_split_tests(self.site_id)
        if found:
            self.test = self.client.update_split_test(self.site_id, found[0].id, wanted)
        else:
            self.test = self.client.create_split_test(self.site_id, wanted)
        self.client.enable_split_test(self.site_id, self.test.id)
        self.say(f"Netlify split test {self.test.id}: {share}% to {self.canary_branch}")
        return self.test

    def step(self, share: int) -> SplitTest:
        if self.test is None:
            return self.start(share)
        self.test = self.client.update_split_test(self.site_id, self.test.id, self.weights(share))
        self.say(f"Netlify split test {self.test.id}: {share}% to {self.canary_branch}")
        return self.test

    def finish(self, deploy_id: str) -> Deploy:
        """Publish the canary's deploy, then end the split test: every visitor gets the new site."""
        published = self.client.restore_deploy(self.site_id, deploy_id)
        self.end()
        return published

    def abort(self) -> None:
        """End the split test; nothing is published (the live deploy was never changed)."""
        self.end()

    def end(self) -> None:
        if self.test is not None:
            self.client.disable_split_test(self.site_id, self.test.id)
            self.say(f"Netlify split test {self.test.id} ended")
