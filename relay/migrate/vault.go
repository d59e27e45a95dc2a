package migrate

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/vault/api"
)

// maxFolderDepth bounds the descent into folders of the godoauth mount.
const maxFolderDepth = 16

// listKeys lists the entries of a KV version 1 path, descending into
// folders: godoauth read <service>/<user> unescaped, so a user name with a
// "/" lived in a folder. Folders deeper than maxFolderDepth are returned
// as they are (ending in "/").
func listKeys(ctx context.Context, c *api.Client, mount, prefix string, depth int) ([]string, error) {
	s, err := c.Logical().ListWithContext(ctx, mount+"/"+prefix)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, k := range stringList(s, "keys") {
		name := prefix + k
		if !strings.HasSuffix(k, "/") || depth >= maxFolderDepth {
			names = append(names, name)
			continue
		}
		sub, err := listKeys(ctx, c, mount, name, depth+1)
		if err != nil {
			return nil, err
		}
		names = append(names, sub...)
	}
	return names, nil
}

// stringList is a list of strings in a response's data, nil if absent.
func stringList(s *api.Secret, field string) []string {
	if s == nil {
		return nil
	}
	items, _ := s.Data[field].([]any)
	out := make([]string, 0, len(items))
	for _, it := range items {
		if str, ok := it.(string); ok {
			out = append(out, str)
		}
	}
	return out
}

// stringField is a string field of a response's data: "" and false when
// absent, and an error when it holds something other than a string.
func stringField(data map[string]any, field string) (string, bool, error) {
	v, ok := data[field]
	if !ok || v == nil {
		return "", false, nil
	}
	s, ok := v.(string)
	if !ok {
		return "", true, fmt.Errorf("%s is not a string", field)
	}
	return s, true, nil
}

// status is the HTTP status of a Vault error, 0 when Vault did not answer.
func status(err error) int {
	var re *api.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

// describeErr makes a Vault error one readable line: the status and
// Vault's messages instead of the client's multi-line text. A message that
// holds one of the secrets (a password the request carried) is withheld
// whole, so no part of the secret is shown.
func describeErr(err error, secrets ...string) string {
	var msg string
	var re *api.ResponseError
	if errors.As(err, &re) {
		msg = fmt.Sprintf("Vault answered %d", re.StatusCode)
		if len(re.Errors) > 0 {
			msg += ": " + strings.Join(re.Errors, "; ")
		}
	} else {
		msg = err.Error()
	}
	for _, s := range secrets {
		if s != "" && (strings.Contains(msg, s) || strings.Contains(oneLine(msg), oneLine(s))) {
			if re != nil {
				return fmt.Sprintf("Vault answered %d (its message is withheld: it contains the password)", re.StatusCode)
			}
			return "the request failed (the message is withheld: it contains the password)"
		}
	}
	return oneLine(msg)
}
