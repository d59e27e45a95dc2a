package backend

import (
	"context"
	"crypto/rand"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"
)

// Backend holds what one mount keeps in memory: the cached config, the
// parsed key ring, the user records, their parsed access and verified credentials, and
// the limits on password checks. Storage is passed in with each call, as
// Vault hands it to each request.
type Backend struct {
	logger hclog.Logger
	now    func() time.Time

	configMu sync.RWMutex
	config   *Config

	ring   atomic.Pointer[KeyRing] // parsed signing keys; nil until loaded
	ringMu sync.Mutex              // serialises key generation and rotation

	userLocks []*locksutil.LockEntry // per-user write locks
	users     sync.Map               // name → *cachedUser
	records   *userRecords           // user records as stored (records.go)

	roles    *recordCache[Role]            // robot roles as stored, access parsed (robots.go)
	robots   *recordCache[Robot]           // robot records as stored
	sessions *recordCache[IdentitySession] // identity sessions as stored (identity_session.go)
	// identityRecords keeps the access records of groups and entities
	// (identity.go), by storage key.
	identityRecords *recordCache[IdentityAccess]
	robotMACKey     atomic.Pointer[[]byte] // HMAC key of robot secrets; nil until loaded
	robotKeyMu      sync.Mutex             // serialises loading or making it
	revokes         chan struct{}          // robot revocations running, at most robotRevokesAtOnce

	credKey []byte // MAC key for the credential cache; random per process, never stored

	passwordChecks *checkSlots  // bounds concurrent bcrypt work
	bcryptRuns     atomic.Int64 // bcrypt comparisons done, decoys included
	decoys         sync.Map     // bcrypt cost → decoy hash for unknown users
	checks         *checkState  // password checks in flight, unknown names' failures

	pruneMu     sync.Mutex
	pruneCursor string // where the next refresh-token prune pass goes on

	identities IdentitySource // Vault's identity store, set once by the plugin (identity.go)

	system func() logical.SystemView // Vault's view of the mount (lease TTLs), set once by the plugin
}

// Options tune a Backend; the zero value is production's.
type Options struct {
	Logger hclog.Logger
	// Now replaces the clock in tests.
	Now func() time.Time
	// PasswordChecks bounds the bcrypt comparisons running at once
	// (default: the number of CPUs).
	PasswordChecks int
}

// New returns a Backend with empty caches.
func New(opts Options) *Backend {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.PasswordChecks <= 0 {
		opts.PasswordChecks = runtime.NumCPU()
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		panic("backend: no randomness: " + err.Error())
	}
	return &Backend{
		logger:          opts.Logger,
		now:             opts.Now,
		userLocks:       locksutil.CreateLocks(),
		credKey:         key,
		passwordChecks:  newCheckSlots(opts.PasswordChecks),
		checks:          newCheckState(unknownNamesTracked),
		records:         newUserRecords(userRecordsKept),
		roles:           newRecordCache[Role](rolesKept),
		robots:          newRecordCache[Robot](robotRecordsKept),
		sessions:        newRecordCache[IdentitySession](identitySessionsKept),
		identityRecords: newRecordCache[IdentityAccess](identityRecordsKept),
		revokes:         make(chan struct{}, robotRevokesAtOnce),
	}
}

// Invalidate drops what is cached for a storage key another node changed.
func (b *Backend) Invalidate(_ context.Context, key string) {
	switch {
	case key == configKey:
		b.dropConfig()
		b.dropCredentials()
	case key == ringKey:
		b.ring.Store(nil)
	case strings.HasPrefix(key, userPrefix):
		name := strings.TrimPrefix(key, userPrefix)
		b.records.drop(name)
		b.users.Delete(name)
	case strings.HasPrefix(key, rolePrefix):
		b.roles.drop(strings.TrimPrefix(key, rolePrefix))
	case strings.HasPrefix(key, robotPrefix):
		b.robots.drop(strings.TrimPrefix(key, robotPrefix))
	case key == RobotKeyPath:
		b.robotMACKey.Store(nil)
	case strings.HasPrefix(key, string(IdentityGroup)+"/") || strings.HasPrefix(key, string(IdentityEntity)+"/"):
		b.identityRecords.drop(key)
	case strings.HasPrefix(key, identitySessionPrefix):
		b.sessions.drop(strings.TrimPrefix(key, identitySessionPrefix))
	}
}

// Reset drops every cache, as after a mount is reloaded.
func (b *Backend) Reset() {
	b.dropConfig()
	b.ring.Store(nil)
	b.dropCredentials()
}

func (b *Backend) dropCredentials() {
	b.users.Clear()
	b.records.clear()
	b.roles.clear()
	b.robots.clear()
	b.sessions.clear()
	b.identityRecords.clear()
	b.robotMACKey.Store(nil)
}

// SetSystemView gives the backend Vault's view of the mount; the plugin
// calls it once, before serving.
func (b *Backend) SetSystemView(f func() logical.SystemView) { b.system = f }

// SystemView is Vault's view of the mount: its lease TTLs.
func (b *Backend) SystemView() logical.SystemView { return b.system() }

// Now is the backend's clock.
func (b *Backend) Now() time.Time { return b.now() }

// BcryptRuns counts the bcrypt comparisons done so far, decoys included;
// a credential cache hit does none.
func (b *Backend) BcryptRuns() int64 { return b.bcryptRuns.Load() }

// Logger is the mount's logger.
func (b *Backend) Logger() hclog.Logger { return b.logger }
