package relay

import (
	"errors"
	"net/http"
	"strings"

	"github.com/hashicorp/vault/api"
)

// invalidTokenError is what Vault adds to its 403 when the token itself is
// revoked, expired or unknown (the sdk's logical.ErrInvalidToken), rather
// than missing a policy.
const invalidTokenError = "invalid token"

// isInvalidToken reports whether Vault refused a call because the token
// itself is invalid, revoked or expired (not for want of a policy).
func isInvalidToken(err error) bool {
	var re *api.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusForbidden {
		return false
	}
	for _, e := range re.Errors {
		// Vault sends its multierror as one string:
		// "2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n".
		if strings.Contains(e, invalidTokenError) {
			return true
		}
	}
	return false
}

// statusCode is the status of Vault's error answer err; 0 when err is
// not one (no answer).
func statusCode(err error) int {
	var re *api.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

// vaultErrorList splits one of Vault's error strings into its errors: Vault
// often answers a multierror, "1 error occurred:\n\t* internal error\n\n".
func vaultErrorList(e string) []string {
	head, rest, ok := strings.Cut(e, "\n")
	if !ok || !strings.HasSuffix(head, " occurred:") {
		return []string{e}
	}
	var errs []string
	for _, line := range strings.Split(rest, "\n") {
		if item, ok := strings.CutPrefix(line, "\t* "); ok {
			errs = append(errs, item)
		}
	}
	return errs
}
