package backend

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/netip"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/access"
)

// TokenRequest is a client's request for a registry token (docs/INTEGRATING.md, "The token
// contract"). Username "" asks for anonymous access.
type TokenRequest struct {
	Service  string // the registry service: the token's aud
	Username string
	Password string
	Account  string
	ClientID string
	Scopes   []string // items of the request; each may hold several scopes
	Offline  bool     // ask for a refresh token too
	TTL      time.Duration
	// ClientAddr is the registry client's address as the relay saw it;
	// the zero Addr when unknown (a direct Vault call). Entries with
	// networks use it (access.Entry).
	ClientAddr netip.Addr
}

// RefreshRequest mints a token from a refresh token.
type RefreshRequest struct {
	Service      string
	RefreshToken string
	ClientID     string
	Scopes       []string
	TTL          time.Duration
	ClientAddr   netip.Addr // as TokenRequest's
}

// Token is a minted registry token.
type Token struct {
	JWT          string
	ExpiresIn    time.Duration
	IssuedAt     time.Time
	RefreshToken string // set when one was asked for and issued
	// IssuedRefresh is an entity's new refresh token, whose Vault lease
	// the answer carries; nil otherwise.
	IssuedRefresh *IssuedRefreshToken
	Issuer        string
	Subject       string
	Access        []access.Grant
}

// maxClientIDLen bounds client_id, which is stored with refresh tokens.
const maxClientIDLen = 256

// TokenForLogin answers a token request with a login: it authenticates
// the user's or robot's name and password (none: anonymous access),
// grants the requested scopes the access allows, and signs the token: the
// whole token request in one place.
func (b *Backend) TokenForLogin(ctx context.Context, s logical.Storage, req TokenRequest) (*Token, error) {
	scopes, cfg, err := b.openTokenRequest(ctx, s, req.Scopes, req.ClientID)
	if err != nil {
		return nil, err
	}
	if req.Username == "" {
		if len(cfg.Anonymous()) == 0 {
			return nil, errorf(KindUnauthorized, "credentials required: this registry allows no anonymous access")
		}
		return b.sign(ctx, s, cfg, req.Service, "", access.GrantScopes("", req.ClientAddr, scopes, cfg.Anonymous()), req.TTL)
	}
	if req.Account != "" && req.Account != req.Username {
		return nil, errorf(KindBadRequest, "account %s does not match the authenticated user", quote(req.Account))
	}
	lg, err := b.authenticate(ctx, s, cfg, req.Username, req.Password)
	if err != nil {
		return nil, err
	}
	tok, err := b.sign(ctx, s, cfg, req.Service, req.Username, access.GrantScopes(req.Username, req.ClientAddr, scopes, lg.access, cfg.Anonymous()), req.TTL)
	if err != nil {
		return nil, err
	}
	if req.Offline && cfg.RefreshTokenTTL > 0 {
		issue := b.issueUserRefreshToken
		if lg.robot {
			issue = b.issueRobotRefreshToken
		}
		rt, err := issue(ctx, s, cfg, req.Username, lg.generation, req.ClientID)
		if err != nil {
			return nil, err
		}
		tok.RefreshToken = rt
	}
	return tok, nil
}

// issueUserRefreshToken issues a refresh token for a user whose password
// was verified at generation, under the user's lock: if the password was
// changed or the user deleted (or re-created) since, no token is issued,
// and a change that comes later finds the token and revokes it.
func (b *Backend) issueUserRefreshToken(ctx context.Context, s logical.Storage, cfg *Config, name string, generation uint64, clientID string) (string, error) {
	lock := locksutil.LockForKey(b.userLocks, name)
	lock.Lock()
	defer lock.Unlock()
	u, err := b.ReadUser(ctx, s, name)
	if err != nil {
		return "", err
	}
	if u == nil || u.Generation != generation {
		return "", errInvalidCredentials
	}
	rt, err := b.issueRefreshToken(ctx, s, cfg, refreshGrant{Subject: UserSubject(name), Generation: generation, ClientID: clientID, TTL: cfg.RefreshTokenTTL})
	if err != nil {
		return "", err
	}
	return rt.Token, nil
}

// TokenForRefreshToken answers a token request with a refresh token of
// any subject, with the subject's access as it is now. A user's refresh
// token must have been issued under the user's current credential
// generation; an entity's is checked by entityTokenFromRefresh.
func (b *Backend) TokenForRefreshToken(ctx context.Context, s logical.Storage, req RefreshRequest) (*Token, error) {
	scopes, cfg, err := b.openTokenRequest(ctx, s, req.Scopes, req.ClientID)
	if err != nil {
		return nil, err
	}
	hash, rec, err := b.liveRefreshToken(ctx, s, cfg, req.RefreshToken)
	if err != nil {
		return nil, err
	}
	var tok *Token
	switch sub := rec.subject(); sub.Kind {
	case SubjectUser:
		tok, err = b.userTokenFromRefresh(ctx, s, cfg, scopes, req, hash, rec)
	case SubjectEntity:
		tok, err = b.entityTokenFromRefresh(ctx, s, cfg, scopes, req, hash, rec)
	case SubjectRobot:
		tok, err = b.robotTokenFromRefresh(ctx, s, cfg, scopes, req, hash, rec)
	default:
		err = errInvalidRefreshToken
	}
	if err != nil {
		return nil, err
	}
	tok.RefreshToken = req.RefreshToken
	return tok, nil
}

func (b *Backend) userTokenFromRefresh(ctx context.Context, s logical.Storage, cfg *Config, scopes []access.Scope, req RefreshRequest, hash string, rec *storedRefreshToken) (*Token, error) {
	if cfg.RefreshTokenTTL == 0 {
		return nil, errInvalidRefreshToken
	}
	u, err := b.ReadUser(ctx, s, rec.ID)
	if err != nil {
		return nil, err
	}
	if u == nil || u.Generation != rec.Generation {
		return nil, errInvalidRefreshToken
	}
	b.recordUse(ctx, s, hash, rec, req.ClientID)
	userAccess := b.cachedUser(u).access
	return b.sign(ctx, s, cfg, req.Service, u.Name, access.GrantScopes(u.Name, req.ClientAddr, scopes, userAccess, cfg.Anonymous()), req.TTL)
}

// openTokenRequest is what every token request starts with: its scopes
// parsed, its client_id checked, the mount's config.
func (b *Backend) openTokenRequest(ctx context.Context, s logical.Storage, rawScopes []string, clientID string) ([]access.Scope, *Config, error) {
	scopes, err := access.ParseScopes(rawScopes)
	if err != nil {
		return nil, nil, errorf(KindInvalidScope, "%s", err)
	}
	if err := checkClientID(clientID); err != nil {
		return nil, nil, err
	}
	cfg, err := b.Config(ctx, s)
	if err != nil {
		return nil, nil, err
	}
	return scopes, cfg, nil
}

// ParseClientAddr reads the client_addr field of a token request: the
// registry client's IP address as the relay saw it, or "" when unknown.
func ParseClientAddr(s string) (netip.Addr, error) {
	a, err := access.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, errorf(KindBadRequest, "%s", err)
	}
	return a, nil
}

func checkClientID(id string) error {
	if len(id) > maxClientIDLen || !printable(id) {
		return errorf(KindBadRequest, "client_id %s: at most %d printable characters", quote(id), maxClientIDLen)
	}
	return nil
}

// claims are the registry token's claims (docs/INTEGRATING.md, "The token contract"). aud is a plain
// string: registry 2.8 rejects an array.
type claims struct {
	Issuer    string         `json:"iss"`
	Subject   string         `json:"sub"`
	Audience  string         `json:"aud"`
	ExpiresAt int64          `json:"exp"`
	NotBefore int64          `json:"nbf"`
	IssuedAt  int64          `json:"iat"`
	ID        string         `json:"jti"`
	Access    []access.Grant `json:"access"`
}

// The jwt.Claims interface; only signing uses these claims here.
func (c *claims) GetExpirationTime() (*jwt.NumericDate, error) { return numericDate(c.ExpiresAt), nil }
func (c *claims) GetIssuedAt() (*jwt.NumericDate, error)       { return numericDate(c.IssuedAt), nil }
func (c *claims) GetNotBefore() (*jwt.NumericDate, error)      { return numericDate(c.NotBefore), nil }
func (c *claims) GetIssuer() (string, error)                   { return c.Issuer, nil }
func (c *claims) GetSubject() (string, error)                  { return c.Subject, nil }
func (c *claims) GetAudience() (jwt.ClaimStrings, error)       { return jwt.ClaimStrings{c.Audience}, nil }

func numericDate(sec int64) *jwt.NumericDate { return jwt.NewNumericDate(time.Unix(sec, 0)) }

// sign makes the JWT for subject with the given grants, signed by the
// current key, its certificate chain in x5c.
func (b *Backend) sign(ctx context.Context, s logical.Storage, cfg *Config, service, subject string, grants []access.Grant, ttl time.Duration) (*Token, error) {
	ring, err := b.signingKeys(ctx, s)
	if err != nil {
		return nil, err
	}
	if ttl <= 0 {
		ttl = cfg.TTL
	}
	ttl = min(ttl, cfg.MaxTTL)
	now := b.now()
	exp := now.Add(ttl)
	key := ring.Current()
	if !exp.Before(key.NotAfter) {
		// The periodic task rotates well before this; if it has not run,
		// rotate now rather than sign beyond the certificate's end.
		if ring, err = b.RotateKeys(ctx, s); err != nil {
			return nil, err
		}
		key = ring.Current()
	}

	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return nil, err
	}
	c := &claims{
		Issuer:    cfg.Issuer,
		Subject:   subject,
		Audience:  service,
		ExpiresAt: exp.Unix(),
		NotBefore: now.Add(-time.Second).Unix(),
		IssuedAt:  now.Unix(),
		ID:        hex.EncodeToString(jti[:]),
		Access:    grants,
	}
	t := jwt.NewWithClaims(key.method, c)
	t.Header["kid"] = key.ID
	if !cfg.OmitX5C {
		t.Header["x5c"] = key.x5c
	}
	signed, err := t.SignedString(key.signer)
	if err != nil {
		return nil, err
	}
	return &Token{JWT: signed, ExpiresIn: ttl, IssuedAt: now.UTC(), Issuer: cfg.Issuer, Subject: subject, Access: grants}, nil
}
