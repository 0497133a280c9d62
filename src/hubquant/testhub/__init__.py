"""A local Hugging Face Hub for tests, which the real client reaches over loopback.

Start one with::

    from hubquant.testhub import HubServer

    with HubServer(tmp_path / "hub") as server:
        api = HfApi(endpoint=server.url, token=server.token_for("alice"))

Set ``HF_HUB_DISABLE_XET=1`` before importing `huggingface_hub`: the test Hub
speaks plain LFS (basic and multipart), not Xet.

By default the server has these accounts. The tokens are test
credentials that only this server accepts:

=============  ============  =====================================
account        kind          tokens (role)
=============  ============  =====================================
alice          user          hf_alice_write (write), hf_alice_read (read)
bob            user          hf_bob_write (write), hf_bob_read (read)
carol          user          hf_carol_write (write), hf_carol_read (read)
microsoft      organization  members: alice
hubquant-org   organization  members: bob
=============  ============  =====================================
"""

from hubquant.testhub.accounts import Account, default_accounts
from hubquant.testhub.server import HubServer

__all__ = ["Account", "HubServer", "default_accounts"]
