// Package callback delivers finished jobs to caller-supplied URLs: signed the Standard Webhooks way and guarded against SSRF.
//
// A [Signer] signs each delivery as the Standard Webhooks specification
// (https://www.standardwebhooks.com/) describes: HMAC-SHA256 over
// "id.timestamp.body", sent in the webhook-id, webhook-timestamp and
// webhook-signature headers, so that a receiver's existing Standard
// Webhooks library verifies it. [Verify] is the receiver's side, for tests
// and for receivers written in Go. A [Keyring] gives each tenant secrets of
// its own, configured or derived from the gateway's, so that no tenant's
// receiver can check or forge another's callbacks.
//
// A [Guard] decides which addresses a callback may reach. [Guard.CheckURL]
// refuses a bad URL when the job is submitted; [Guard.Client] refuses a
// forbidden address again when the connection is made, checking the IP
// actually dialed, so a hostname that resolves (or is rebound) to a private
// address is refused too. Redirects are never followed.
//
// A [Sender] POSTs the signed JSON and reports a failure as an [*Error]
// that says whether trying again could help. The gateway's deliverer of
// stored callbacks, which retries them and keeps each tenant to its share,
// is package callback/delivery, apart so that this package needs neither
// the buffer nor dispatch.
package callback
