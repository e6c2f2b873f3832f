import pytest
from cryptography.fernet import Fernet

from shared import config
from shared.adapters.secret_box import SecretBox, SecretsUnavailable
from shared.domain.secrets import redact

AZURITE = "UseDevelopmentStorage=true"


def test_emulator_connection_string_is_accepted():
    settings = config.load({"AzureWebJobsStorage": AZURITE})
    assert settings.storage.connection_string == AZURITE
    assert settings.poison_queue == "build-runs-poison"
    assert settings.table("runs") == "btruns"


def test_real_account_key_is_refused():
    real = "DefaultEndpointsProtocol=https;AccountName=prod;AccountKey=abc;EndpointSuffix=core.windows.net"
    with pytest.raises(config.ConfigError, match="only for the Azurite emulator"):
        config.load({"AzureWebJobsStorage": real})


def test_identity_based_settings():
    env = {f"AzureWebJobsStorage__{k}ServiceUri": f"https://acct.{k}.core.windows.net"
           for k in ("table", "queue", "blob")}
    env["AzureWebJobsStorage__clientId"] = "11111111-2222-3333-4444-555555555555"
    settings = config.load(env)
    assert settings.storage.connection_string is None
    assert settings.storage.client_id == "11111111-2222-3333-4444-555555555555"


def test_missing_storage_names_the_settings():
    with pytest.raises(config.ConfigError, match="__queueServiceUri"):
        config.load({"AzureWebJobsStorage__tableServiceUri": "https://a.table.core.windows.net"})


def test_secrets_round_trip_and_need_a_key():
    box = SecretBox(Fernet.generate_key().decode())
    sealed = box.seal({"token": "s3cr3t"})
    assert "s3cr3t" not in sealed and box.open(sealed) == {"token": "s3cr3t"}
    with pytest.raises(SecretsUnavailable):
        SecretBox(None).seal({"token": "x"})


def test_redact_hides_every_secret():
    assert redact("pass=hunter22 and hunter2", ["hunter2", "hunter22"]) == "pass=*** and ***"


def test_unresolved_key_vault_reference_is_named():
    env = {"AzureWebJobsStorage": AZURITE,
           "BASETRIGGER_SECRET_KEY": "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/k/)"}
    with pytest.raises(config.ConfigError, match="unresolved Key Vault reference"):
        config.load(env)


def test_several_keys_the_first_encrypts_all_decrypt():
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    sealed_with_old = SecretBox(old).seal({"k": "v"})
    box = SecretBox(f" {new}\n{old} ,")  # commas and whitespace both separate keys

    assert box.keys == [new, old]
    assert box.open(sealed_with_old) == {"k": "v"}
    assert not box.is_current(sealed_with_old)
    resealed = box.reseal(sealed_with_old)
    assert box.is_current(resealed) and SecretBox(new).open(resealed) == {"k": "v"}
    assert SecretBox(new).open(box.seal({"a": "b"})) == {"a": "b"}  # new secrets use the first key
    with pytest.raises(SecretsUnavailable):
        SecretBox(old).open(resealed)


def test_a_key_that_is_not_a_fernet_key_is_refused_without_showing_the_setting():
    good = Fernet.generate_key().decode()
    with pytest.raises(SecretsUnavailable) as refused:
        SecretBox(f"{good},not-a-fernet-key-at-all")
    assert "not-a-fernet-key" not in str(refused.value) and good not in str(refused.value)


def test_a_multi_line_secret_is_hidden_whole_line_by_line_and_in_base64():
    import base64

    from shared.domain.secrets import SecretMask

    pem = "-----BEGIN KEY-----\nAbCdEfGh12345678\nZyXw9876\n-----END KEY-----"
    mask = SecretMask([pem, ""])
    assert mask(f"echo {pem}") == "echo ***"
    assert mask("AbCdEfGh12345678") == "***" and mask("  ZyXw9876 ") == "  *** "
    for raw in (pem, pem + "\n"):
        encoded = base64.b64encode(raw.encode()).decode()
        assert mask(encoded) == "***"
        assert "***" in mask(encoded[:76]) and encoded[:76] not in mask(encoded[:76])
    assert mask("nothing secret here") == "nothing secret here"
    assert SecretMask([])("x") == "x"
