package callback

import (
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"slices"
)

// tenantLabel starts what a tenant's derived key is the HMAC of, so that a
// derived key can never be a signature the gateway's key made: signed
// content starts with a webhook-id, never with this.
const tenantLabel = "sluice-callback-tenant:"

// Keyring holds the signing secrets of every tenant, so that no tenant's
// receiver can check, or forge, another tenant's callbacks:
//
//   - tenant "" (a gateway without tenants) signs with the gateway's
//     secrets as they are;
//   - a tenant given secrets of its own signs with those;
//   - any other tenant signs with secrets derived from the gateway's: for
//     each gateway secret, in order, the key
//     HMAC-SHA256(gateway key, "sluice-callback-tenant:" + tenant).
//
// Derived secrets follow a rotation of the gateway's: each one signs, as
// the gateway's do. [Keyring.Secrets] gives them in the "whsec_" form, for
// a tenant's receivers.
//
// Build one with [NewKeyring]. The zero value has no secrets: every
// [Keyring.Signer] signs nothing. A Keyring is immutable and safe for
// concurrent use.
type Keyring struct {
	gateway [][]byte
	tenants map[string]*Signer
}

// NewKeyring takes the gateway's secrets, at least one, and the configured
// tenants, each with its own secrets or none (nil) to sign with secrets
// derived from the gateway's. Secrets are in the form [NewSigner] takes.
// Tenant "" cannot be given: it signs with the gateway's secrets. No key
// may serve two of them (the gateway, a tenant's own, a tenant's derived
// one): a receiver of one could then check another's callbacks. Errors
// name secrets by tenant and position, never by value.
func NewKeyring(gatewaySecrets []string, tenants map[string][]string) (*Keyring, error) {
	gw, err := NewSigner(gatewaySecrets)
	if err != nil {
		return nil, err
	}
	k := &Keyring{gateway: gw.keys, tenants: make(map[string]*Signer)}
	owners := make(map[string]string) // key → who it is
	claim := func(key []byte, who string) error {
		if other, ok := owners[string(key)]; ok {
			return fmt.Errorf("callback: %s is the same as %s: tenants must not share a key", who, other)
		}
		owners[string(key)] = who
		return nil
	}
	for i, key := range k.gateway {
		if err := claim(key, fmt.Sprintf("the gateway's signing secret %d", i+1)); err != nil {
			return nil, err
		}
	}
	// In name order, so that the same config gives the same error.
	for _, tenant := range slices.Sorted(maps.Keys(tenants)) {
		secrets := tenants[tenant]
		if tenant == "" {
			return nil, errors.New("callback: tenant \"\" signs with the gateway's secrets and takes none of its own")
		}
		if len(secrets) == 0 {
			for i, key := range k.derive(tenant) {
				if err := claim(key, fmt.Sprintf("tenant %q's derived secret %d", tenant, i+1)); err != nil {
					return nil, err
				}
			}
			continue
		}
		keys := make([][]byte, len(secrets))
		for i, secret := range secrets {
			who := fmt.Sprintf("tenant %q's signing secret %d", tenant, i+1)
			if keys[i], err = decodeSecret(secret); err != nil {
				return nil, fmt.Errorf("callback: %s: %w", who, err)
			}
			if err := claim(keys[i], who); err != nil {
				return nil, err
			}
		}
		k.tenants[tenant] = &Signer{keys: keys}
	}
	return k, nil
}

// Signer returns what signs the tenant's callbacks. It is nil only for a
// Keyring without secrets.
func (k *Keyring) Signer(tenant string) *Signer {
	if k == nil || len(k.gateway) == 0 {
		return nil
	}
	if tenant == "" {
		return &Signer{keys: k.gateway}
	}
	if s, ok := k.tenants[tenant]; ok {
		return s
	}
	return &Signer{keys: k.derive(tenant)}
}

// Secrets returns the secrets that sign the tenant's callbacks, in the
// "whsec_" form and in order; a receiver of the tenant's callbacks checks
// them with any one.
func (k *Keyring) Secrets(tenant string) []string {
	s := k.Signer(tenant)
	if s == nil {
		return nil
	}
	out := make([]string, len(s.keys))
	for i, key := range s.keys {
		out[i] = secretPrefix + base64.StdEncoding.EncodeToString(key)
	}
	return out
}

// derive returns the tenant's keys derived from the gateway's.
func (k *Keyring) derive(tenant string) [][]byte {
	keys := make([][]byte, len(k.gateway))
	label := []byte(tenantLabel + tenant)
	for i, key := range k.gateway {
		keys[i] = mac(key, label)
	}
	return keys
}
