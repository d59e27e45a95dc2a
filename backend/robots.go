package backend

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/access"
)

// Robot accounts are Vault dynamic secrets: roles/<name> says what a
// robot may do, creds/<name> makes one under a Vault lease, and the
// lease's end (revoke or expiry) ends the robot. A robot logs in as a user
// does, with its name and a random secret; the secret is checked by an
// HMAC-SHA256 under a per-mount key (robotKeyPath), not bcrypt: 256 random
// bits cannot be guessed, so a slow hash would only cost every login.
//
// Storage: roles/<role>, robots/<robot>, robot-index/<role>/<robot> (to
// list a role's robots), robot-key (the HMAC key, seal-wrapped).
const (
	rolePrefix       = "roles/"
	robotPrefix      = "robots/"
	robotIndexPrefix = "robot-index/"
	// RobotKeyPath holds the HMAC key of robot secrets.
	RobotKeyPath = "robot-key"

	robotSecretBytes  = 32 // 256 random bits
	robotSuffixBytes  = 10 // 80 random bits in the name: names never repeat
	defaultNamePrefix = "robot-"
	maxRoleRegistries = 16
	robotRecordsKept  = 65536
	rolesKept         = 4096
)

// RoleNamePattern is the syntax of a role name.
const RoleNamePattern = `[A-Za-z0-9][A-Za-z0-9_-]{0,63}`

var (
	roleNameRE   = regexp.MustCompile(`^` + RoleNamePattern + `$`)
	namePrefixRE = regexp.MustCompile(`^[A-Za-z0-9_.@-]{0,64}$`)
	hostRE       = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?$`)
	robotSuffix  = base32.StdEncoding.WithPadding(base32.NoPadding)
)

// Role is a kind of robot: its access (the grammar of users' access, with
// ${user} the robot's name), lease times, the registry hosts its Docker
// config names, and the prefix of its robots' names.
type Role struct {
	Name       string        `json:"name"`
	Access     string        `json:"access"`
	TTL        time.Duration `json:"ttl"`     // 0: the mount's default lease TTL
	MaxTTL     time.Duration `json:"max_ttl"` // 0: the mount's max lease TTL
	Registries []string      `json:"registries,omitempty"`
	NamePrefix string        `json:"name_prefix"`
	// Generation is random and new with each create: robots of a role
	// deleted and created again under its name stay refused.
	Generation uint64    `json:"generation"`
	Created    time.Time `json:"created"`
	Updated    time.Time `json:"updated"`

	parsed access.List // Access parsed, when read through the cache
}

// RoleUpdate is an operator's write to roles/<name>; nil fields keep their
// values (a new role takes the defaults).
type RoleUpdate struct {
	Access     *string
	TTL        *time.Duration
	MaxTTL     *time.Duration
	Registries *[]string
	NamePrefix *string
}

// LeaseLimits are the mount's lease TTLs, from Vault's system view.
type LeaseLimits struct {
	DefaultTTL time.Duration
	MaxTTL     time.Duration
}

// Robot is one live (or not yet removed) robot account. Its secret is
// stored only as its HMAC.
type Robot struct {
	Name           string    `json:"name"`
	Role           string    `json:"role"`
	RoleGeneration uint64    `json:"role_generation"`
	SecretMAC      string    `json:"secret_mac"`
	Generation     uint64    `json:"generation"` // of its refresh tokens
	Issued         time.Time `json:"issued"`
	Expires        time.Time `json:"expires"`
}

// RobotCreds is a new robot and its secret, as creds/<role> answers it.
type RobotCreds struct {
	Robot
	Password   string
	Registries []string
	MaxTTL     time.Duration // the role's, for the lease
}

// ValidRoleName reports whether name can be a role name.
func ValidRoleName(name string) bool { return roleNameRE.MatchString(name) }

// robotSubject is the refresh-token subject of a robot; its lock is the
// robot's lock.
func robotSubject(name string) Subject { return Subject{Kind: SubjectRobot, ID: name} }

// CheckRoleName refuses an invalid role name with a 400 naming it.
func CheckRoleName(name string) error {
	if ValidRoleName(name) {
		return nil
	}
	return errorf(KindBadRequest, "role name %s: use 1 to 64 letters, digits, _ and -, starting with a letter or digit", quote(name))
}

func errNoRole(name string) error {
	return errorf(KindNotFound, "role %s not found", quote(name))
}

// ReadRole returns the stored role, or nil.
func (b *Backend) ReadRole(ctx context.Context, s logical.Storage, name string) (*Role, error) {
	if !ValidRoleName(name) {
		return nil, nil
	}
	return readRecord(ctx, s, b.roles, rolePrefix+name, "role", name, func(r *Role) {
		var err error
		if r.parsed, err = access.Parse(r.Access); err != nil {
			// Validated on write; a record that no longer parses grants nothing.
			b.logger.Error("stored role access does not parse; granting nothing", "role", name, "error", err)
			r.parsed = nil
		}
	})
}

// existingRole returns the role, or a 400 for an invalid name and a 404
// naming a role that does not exist.
func (b *Backend) existingRole(ctx context.Context, s logical.Storage, name string) (*Role, error) {
	if err := CheckRoleName(name); err != nil {
		return nil, err
	}
	r, err := b.ReadRole(ctx, s, name)
	if err == nil && r == nil {
		err = errNoRole(name)
	}
	return r, err
}

// ListRoles returns the role names.
func (b *Backend) ListRoles(ctx context.Context, s logical.Storage) ([]string, error) {
	return s.List(ctx, rolePrefix)
}

// WriteRole creates or updates a role; everything is checked before
// anything is stored. A change reaches the role's live robots at their
// next token request.
func (b *Backend) WriteRole(ctx context.Context, s logical.Storage, name string, up RoleUpdate, limits LeaseLimits) (*Role, error) {
	if err := CheckRoleName(name); err != nil {
		return nil, err
	}
	lock := locksutil.LockForKey(b.userLocks, "role:"+name)
	lock.Lock()
	defer lock.Unlock()
	old, err := b.ReadRole(ctx, s, name)
	if err != nil {
		return nil, err
	}
	now := b.now().UTC()
	r := &Role{Name: name, NamePrefix: defaultNamePrefix, Created: now, Generation: newGeneration()}
	if old != nil {
		r = old
	} else if up.Access == nil {
		return nil, errorf(KindBadRequest, "a new role needs access")
	}
	if up.Access != nil {
		parsed, err := access.Parse(*up.Access)
		if err != nil {
			return nil, errorf(KindBadRequest, "access: %s", err)
		}
		r.Access = parsed.String()
	}
	if up.TTL != nil {
		r.TTL = *up.TTL
	}
	if up.MaxTTL != nil {
		r.MaxTTL = *up.MaxTTL
	}
	if err := checkRoleTTLs(r.TTL, r.MaxTTL, limits); err != nil {
		return nil, err
	}
	if up.Registries != nil {
		hosts, err := checkRegistries(*up.Registries)
		if err != nil {
			return nil, err
		}
		r.Registries = hosts
	}
	if up.NamePrefix != nil {
		if !namePrefixRE.MatchString(*up.NamePrefix) {
			return nil, errorf(KindBadRequest, "name_prefix %s: use at most 64 letters, digits, _ - . @", quote(*up.NamePrefix))
		}
		r.NamePrefix = *up.NamePrefix
	}
	r.Updated = now
	entry, err := logical.StorageEntryJSON(rolePrefix+name, r)
	if err != nil {
		return nil, err
	}
	err = s.Put(ctx, entry)
	b.roles.drop(name) // whether or not the write got through
	if err != nil {
		return nil, fmt.Errorf("store role: %w", err)
	}
	return r, nil
}

func checkRoleTTLs(ttl, maxTTL time.Duration, limits LeaseLimits) error {
	switch {
	case ttl < 0 || maxTTL < 0:
		return errorf(KindBadRequest, "ttl and max_ttl must not be negative")
	case maxTTL > 0 && ttl > maxTTL:
		return errorf(KindBadRequest, "ttl %s is above max_ttl %s", ttl, maxTTL)
	case limits.MaxTTL > 0 && ttl > limits.MaxTTL:
		return errorf(KindBadRequest, "ttl %s is above the mount's max_lease_ttl %s", ttl, limits.MaxTTL)
	case limits.MaxTTL > 0 && maxTTL > limits.MaxTTL:
		return errorf(KindBadRequest, "max_ttl %s is above the mount's max_lease_ttl %s", maxTTL, limits.MaxTTL)
	}
	return nil
}

// checkRegistries checks registry host names ("host" or "host:port", as
// Docker's config.json keys them) and returns them deduplicated.
func checkRegistries(hosts []string) ([]string, error) {
	if len(hosts) > maxRoleRegistries {
		return nil, errorf(KindBadRequest, "registry: %d hosts, at most %d", len(hosts), maxRoleRegistries)
	}
	var out []string
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		host := h
		if hp, port, err := net.SplitHostPort(h); err == nil {
			if port == "" || strings.Trim(port, "0123456789") != "" || len(port) > 5 {
				return nil, errorf(KindBadRequest, "registry %s: want host or host:port", quote(h))
			}
			host = strings.Trim(hp, "[]")
		}
		if !hostRE.MatchString(host) && net.ParseIP(host) == nil {
			return nil, errorf(KindBadRequest, "registry %s: want a host name or host:port, without scheme or path", quote(h))
		}
		if !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out, nil
}

// DeleteRole removes a role. Its robots are refused from this moment
// (their role is gone); their leases remove them as they end.
func (b *Backend) DeleteRole(ctx context.Context, s logical.Storage, name string) error {
	if err := CheckRoleName(name); err != nil {
		return err
	}
	lock := locksutil.LockForKey(b.userLocks, "role:"+name)
	lock.Lock()
	defer lock.Unlock()
	err := s.Delete(ctx, rolePrefix+name)
	b.roles.drop(name)
	if err != nil {
		return fmt.Errorf("delete role: %w", err)
	}
	return nil
}

// IssueRobot makes a robot of the role, live for ttl (the lease's, as
// Vault computed it from the role and the mount).
func (b *Backend) IssueRobot(ctx context.Context, s logical.Storage, roleName string, ttl time.Duration) (*RobotCreds, error) {
	r, err := b.existingRole(ctx, s, roleName)
	if err != nil {
		return nil, err
	}
	key, err := b.robotKey(ctx, s, true)
	if err != nil {
		return nil, err
	}
	var raw [robotSecretBytes + robotSuffixBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, err
	}
	password := base64.RawURLEncoding.EncodeToString(raw[:robotSecretBytes])
	name := r.NamePrefix + roleName + "-" + strings.ToLower(robotSuffix.EncodeToString(raw[robotSecretBytes:]))
	now := b.now().UTC()
	rb := Robot{
		Name: name, Role: roleName, RoleGeneration: r.Generation,
		SecretMAC:  hex.EncodeToString(robotSecretMAC(key, name, password)),
		Generation: newGeneration(),
		Issued:     now, Expires: now.Add(ttl),
	}
	// The index first: a robot that exists is always listed.
	if err := s.Put(ctx, &logical.StorageEntry{Key: robotIndexPrefix + roleName + "/" + name}); err != nil {
		return nil, fmt.Errorf("store robot: %w", err)
	}
	if err := b.putRobot(ctx, s, &rb); err != nil {
		return nil, err
	}
	return &RobotCreds{Robot: rb, Password: password, Registries: r.Registries, MaxTTL: r.MaxTTL}, nil
}

// RenewRobot moves a live robot's end to now plus the lease's new TTL,
// which ttlOf computes from the robot's role.
func (b *Backend) RenewRobot(ctx context.Context, s logical.Storage, name string, ttlOf func(*Role) (time.Duration, error)) (*Role, time.Duration, error) {
	lock := b.subjectLock(robotSubject(name))
	lock.Lock()
	defer lock.Unlock()
	rb, r, err := b.liveRobot(ctx, s, name)
	if err != nil {
		return nil, 0, err
	}
	if rb == nil {
		return nil, 0, errorf(KindBadRequest, "robot %s has ended (revoked, expired, or its role deleted)", quote(name))
	}
	ttl, err := ttlOf(r)
	if err != nil {
		return nil, 0, err
	}
	rb.Expires = b.now().UTC().Add(ttl)
	return r, ttl, b.putRobot(ctx, s, rb)
}

// robotRevokesAtOnce bounds the robot revocations running at once. When
// many robots expire together, Vault's expiration manager sends them all
// (200 revocation workers by default), and their storage writes took the
// CPU from token requests: a user's p99 rose ×7.6 while 10,000 expired
// (TestBench_robotExpiry, two cores). Taken a few at a time they finish
// later, and no robot is the worse for it: one past its end is refused by
// its record (liveRobot) whether or not its revocation has run.
const robotRevokesAtOnce = 2

// RevokeRobot ends a robot: its record first (from then on it is
// refused), then its refresh tokens and its index entry. Revoking a robot
// that is gone is not an error; a failure halfway is retried by Vault, and
// the robot stays refused meanwhile. It waits for one of
// robotRevokesAtOnce turns; a revocation whose context ends first fails,
// and Vault tries it again later.
func (b *Backend) RevokeRobot(ctx context.Context, s logical.Storage, name, role string) error {
	if !access.ValidUserName(name) {
		return nil // never a robot's name: nothing to revoke
	}
	select {
	case b.revokes <- struct{}{}:
		defer func() { <-b.revokes }()
	case <-ctx.Done():
		return fmt.Errorf("revoke robot: %w", ctx.Err())
	}
	lock := b.subjectLock(robotSubject(name))
	lock.Lock()
	defer lock.Unlock()
	err := s.Delete(ctx, robotPrefix+name)
	b.robots.drop(name)
	if err != nil {
		return fmt.Errorf("revoke robot: %w", err)
	}
	if _, err := b.revokeRefreshTokens(ctx, s, robotSubject(name)); err != nil {
		return fmt.Errorf("robot revoked, but deleting its refresh tokens failed: %w", err)
	}
	if ValidRoleName(role) {
		if err := s.Delete(ctx, robotIndexPrefix+role+"/"+name); err != nil {
			return fmt.Errorf("robot revoked, but deleting its index entry failed: %w", err)
		}
	}
	return nil
}

// RobotInfo is what an operator sees of a robot: never its secret.
type RobotInfo struct {
	Name    string
	Issued  time.Time
	Expires time.Time
}

// ListRobots lists a role's live robots.
func (b *Backend) ListRobots(ctx context.Context, s logical.Storage, roleName string) ([]RobotInfo, error) {
	if _, err := b.existingRole(ctx, s, roleName); err != nil {
		return nil, err
	}
	names, err := s.List(ctx, robotIndexPrefix+roleName+"/")
	if err != nil {
		return nil, fmt.Errorf("list robots: %w", err)
	}
	out := []RobotInfo{}
	for _, n := range names {
		rb, _, err := b.liveRobot(ctx, s, n)
		if err != nil {
			return nil, err
		}
		if rb != nil && rb.Role == roleName {
			out = append(out, RobotInfo{Name: rb.Name, Issued: rb.Issued, Expires: rb.Expires})
		}
	}
	return out, nil
}

// ReadRobot returns the stored robot, or nil.
func (b *Backend) ReadRobot(ctx context.Context, s logical.Storage, name string) (*Robot, error) {
	if !access.ValidUserName(name) {
		return nil, nil
	}
	return readRecord(ctx, s, b.robots, robotPrefix+name, "robot", name, nil)
}

// liveRobot returns the robot and its role when the robot is live: stored,
// not past its end, its role there and the same role it was made of.
// Otherwise both are nil.
func (b *Backend) liveRobot(ctx context.Context, s logical.Storage, name string) (*Robot, *Role, error) {
	rb, err := b.ReadRobot(ctx, s, name)
	if err != nil || rb == nil || !b.now().Before(rb.Expires) {
		return nil, nil, err
	}
	r, err := b.ReadRole(ctx, s, rb.Role)
	if err != nil || r == nil || r.Generation != rb.RoleGeneration {
		return nil, nil, err
	}
	return rb, r, nil
}

// authenticateRobot checks a robot's secret. ok is false when name is no
// live robot or the secret is wrong: the caller then treats the name as
// unknown, so a robot that has ended gets an unknown user's answer, and
// no failure is counted against a robot (it cannot be locked out).
func (b *Backend) authenticateRobot(ctx context.Context, s logical.Storage, name, password string) (*login, bool, error) {
	rb, r, err := b.liveRobot(ctx, s, name)
	if err != nil || rb == nil {
		return nil, false, err
	}
	key, err := b.robotKey(ctx, s, false)
	if err != nil || key == nil {
		return nil, false, err
	}
	want, err := hex.DecodeString(rb.SecretMAC)
	if err != nil || !hmac.Equal(want, robotSecretMAC(key, name, password)) {
		return nil, false, nil
	}
	return &login{access: r.parsed, generation: rb.Generation, robot: true}, true, nil
}

// issueRobotRefreshToken issues a refresh token for a robot verified at
// generation, under the robot's lock, so that a revoke that comes later
// finds the token.
func (b *Backend) issueRobotRefreshToken(ctx context.Context, s logical.Storage, cfg *Config, name string, generation uint64, clientID string) (string, error) {
	sub := robotSubject(name)
	lock := b.subjectLock(sub)
	lock.Lock()
	defer lock.Unlock()
	rb, _, err := b.liveRobot(ctx, s, name)
	if err != nil {
		return "", err
	}
	if rb == nil || rb.Generation != generation {
		return "", errInvalidCredentials
	}
	rt, err := b.issueRefreshToken(ctx, s, cfg, refreshGrant{Subject: sub, Generation: generation, ClientID: clientID, TTL: cfg.RefreshTokenTTL})
	if err != nil {
		return "", err
	}
	return rt.Token, nil
}

// robotTokenFromRefresh mints from a robot's refresh token of generation,
// with its role's access as it is now, while the robot is live.
func (b *Backend) robotTokenFromRefresh(ctx context.Context, s logical.Storage, cfg *Config, scopes []access.Scope, req RefreshRequest, hash string, rec *storedRefreshToken) (*Token, error) {
	if cfg.RefreshTokenTTL == 0 {
		return nil, errInvalidRefreshToken
	}
	rb, r, err := b.liveRobot(ctx, s, rec.ID)
	if err != nil {
		return nil, err
	}
	if rb == nil || rb.Generation != rec.Generation {
		return nil, errInvalidRefreshToken
	}
	b.recordUse(ctx, s, hash, rec, req.ClientID)
	return b.sign(ctx, s, cfg, req.Service, rb.Name, access.GrantScopes(rb.Name, req.ClientAddr, scopes, r.parsed, cfg.Anonymous()), req.TTL)
}

func (b *Backend) putRobot(ctx context.Context, s logical.Storage, rb *Robot) error {
	entry, err := logical.StorageEntryJSON(robotPrefix+rb.Name, rb)
	if err != nil {
		return err
	}
	err = s.Put(ctx, entry)
	b.robots.drop(rb.Name)
	if err != nil {
		return fmt.Errorf("store robot: %w", err)
	}
	return nil
}

func robotSecretMAC(key []byte, name, password string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(name))
	m.Write([]byte{0})
	m.Write([]byte(password))
	return m.Sum(nil)
}

// robotKey returns the mount's HMAC key of robot secrets, made and stored
// on first use when create is set; nil when there is none yet.
func (b *Backend) robotKey(ctx context.Context, s logical.Storage, create bool) ([]byte, error) {
	if k := b.robotMACKey.Load(); k != nil {
		return *k, nil
	}
	b.robotKeyMu.Lock()
	defer b.robotKeyMu.Unlock()
	if k := b.robotMACKey.Load(); k != nil {
		return *k, nil
	}
	entry, err := s.Get(ctx, RobotKeyPath)
	if err != nil {
		return nil, fmt.Errorf("read robot key: %w", err)
	}
	var key []byte
	switch {
	case entry != nil:
		key = entry.Value
	case !create:
		return nil, nil
	default:
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		if err := s.Put(ctx, &logical.StorageEntry{Key: RobotKeyPath, Value: key, SealWrap: true}); err != nil {
			return nil, fmt.Errorf("store robot key: %w", err)
		}
	}
	b.robotMACKey.Store(&key)
	return key, nil
}

// DockerConfigJSON is the JSON of a Docker config.json that logs the robot
// in to each host: what a kubernetes.io/dockerconfigjson secret holds.
func DockerConfigJSON(hosts []string, username, password string) (string, error) {
	type authEntry struct {
		Username string `json:"username"`
		Password string `json:"password"`
		Auth     string `json:"auth"`
	}
	auths := make(map[string]authEntry, len(hosts))
	for _, h := range hosts {
		auths[h] = authEntry{Username: username, Password: password, Auth: base64.StdEncoding.EncodeToString([]byte(username + ":" + password))}
	}
	out, err := json.Marshal(map[string]any{"auths": auths})
	return string(out), err
}
