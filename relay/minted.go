package relay

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// maxTokenBytes bounds a token from the plugin.
const maxTokenBytes = 64 << 10

// mintedToken is the plugin's answer, checked.
type mintedToken struct {
	Token        string
	ExpiresIn    int64
	IssuedAt     string
	RefreshToken string
	// From the token's claims, for the log and the OAuth2 scope.
	Issuer  string
	Subject string
	Access  []accessEntry
}

type accessEntry struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// readMinted checks the plugin's answer: a Vault field is input like any other.
func readMinted(data map[string]any) (*mintedToken, error) {
	t := &mintedToken{}
	var ok bool
	if t.Token, ok = data["token"].(string); !ok || t.Token == "" {
		return nil, errors.New("no token")
	}
	if len(t.Token) > maxTokenBytes {
		return nil, errors.New("token too long")
	}
	if at, present := data["access_token"]; present && at != t.Token {
		return nil, errors.New("access_token differs from token")
	}
	n, err := wholeNumber(data["expires_in"])
	if err != nil || n <= 0 || n > 10*maxExpiration {
		return nil, fmt.Errorf("expires_in: want a positive number of seconds, got %v", data["expires_in"])
	}
	t.ExpiresIn = n
	switch at := data["issued_at"].(type) {
	case nil:
		t.IssuedAt = time.Now().UTC().Format(time.RFC3339)
	case string:
		if _, err := time.Parse(time.RFC3339, at); err != nil {
			return nil, fmt.Errorf("issued_at: want RFC 3339, got %s", quote(at))
		}
		t.IssuedAt = at
	default:
		return nil, errors.New("issued_at: want a string")
	}
	switch rt := data["refresh_token"].(type) {
	case nil:
	case string:
		t.RefreshToken = rt
	default:
		return nil, errors.New("refresh_token: want a string")
	}
	if err := t.readClaims(); err != nil {
		return nil, err
	}
	return t, nil
}

func wholeNumber(v any) (int64, error) {
	switch n := v.(type) {
	case json.Number:
		return n.Int64()
	case float64:
		if n != float64(int64(n)) {
			return 0, errors.New("not a whole number")
		}
		return int64(n), nil
	case int:
		return int64(n), nil
	case int64:
		return n, nil
	default:
		return 0, errors.New("not a number")
	}
}

// readClaims reads iss, sub and access from the JWT's payload. The relay
// does not verify the signature: the token comes from Vault over the
// relay's own connection, and the registry verifies it.
func (t *mintedToken) readClaims() error {
	parts := strings.Split(t.Token, ".")
	if len(parts) != 3 {
		return errors.New("token is not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return errors.New("token payload is not base64url")
	}
	var claims struct {
		Issuer  string        `json:"iss"`
		Subject string        `json:"sub"`
		Access  []accessEntry `json:"access"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return errors.New("token payload is not a JSON claim set")
	}
	t.Issuer, t.Subject, t.Access = claims.Issuer, claims.Subject, claims.Access
	return nil
}
