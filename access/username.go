package access

import (
	"regexp"
	"strings"

	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// UserNamePattern is the syntax of a user name (SPEC.md): user names
// are often e-mail addresses.
const UserNamePattern = `[A-Za-z0-9_.@-]{1,256}`

var userNameRE = regexp.MustCompile(`^` + UserNamePattern + `$`)

// ValidUserName reports whether name can be a user name. Names of dots only
// are refused: they would read as path segments.
func ValidUserName(name string) bool {
	return userNameRE.MatchString(name) && strings.Trim(name, ".") != ""
}

// quote shows untrusted input in an error: quoted, escaped, truncated.
var quote = tokenapi.Quote
