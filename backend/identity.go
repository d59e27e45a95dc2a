package backend

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/vault-registry/vault-plugin-registry/access"
)

// Vault identities as registry users: the access of a Vault identity group
// (groups/<name>) or of one entity (entities/<name>) is an access string,
// as a user's is. A token for an identity grants the union of the access of
// the entity's groups (direct and inherited), of the entity itself, and the
// anonymous access.

// IdentityKind says whether an identity access record is for a group or an
// entity; it is also the storage prefix and the path of its records.
type IdentityKind string

const (
	IdentityGroup  IdentityKind = "groups"
	IdentityEntity IdentityKind = "entities"
)

// Subjects an identity's token can carry (config identity_subject).
const (
	SubjectEntityName = "entity_name"
	SubjectAliasName  = "alias_name"
)

// IdentityAccess is the access string given to one Vault group or entity.
type IdentityAccess struct {
	Name    string      `json:"name"`
	Access  string      `json:"access"`
	Created time.Time   `json:"created"`
	Updated time.Time   `json:"updated"`
	parsed  access.List // Access parsed, when read through the cache
}

// IdentitySource is what the plugin reads of Vault's identity store: the
// system view of the mount.
type IdentitySource interface {
	EntityInfo(entityID string) (*logical.Entity, error)
	GroupsForEntity(entityID string) ([]*logical.Group, error)
}

// SetIdentitySource gives the backend Vault's identity store; the plugin
// calls it once, before serving.
func (b *Backend) SetIdentitySource(ids IdentitySource) { b.identities = ids }

func (b *Backend) identitySource() (IdentitySource, error) {
	if b.identities == nil {
		return nil, errors.New("no identity store: the plugin did not set one")
	}
	return b.identities, nil
}

// identityRecordsKept bounds the group and entity access records kept in
// memory; past it, a record is read from storage again.
const identityRecordsKept = 16384

func identityKey(kind IdentityKind, name string) string { return string(kind) + "/" + name }

func checkIdentityName(kind IdentityKind, name string) error {
	if !access.ValidUserName(name) {
		return errorf(KindBadRequest, "%s name %s: use 1 to 256 letters, digits, _ - . @", kind.noun(), quote(name))
	}
	return nil
}

func (k IdentityKind) noun() string {
	if k == IdentityGroup {
		return "group"
	}
	return "entity"
}

// WriteIdentityAccess stores the access string of a group or an entity,
// validated first: a bad entry is a 400 naming it, and nothing is stored.
func (b *Backend) WriteIdentityAccess(ctx context.Context, s logical.Storage, kind IdentityKind, name, text string) (created bool, err error) {
	if err := checkIdentityName(kind, name); err != nil {
		return false, err
	}
	a, err := access.Parse(text)
	if err != nil {
		return false, errorf(KindBadRequest, "access: %s", err)
	}
	old, err := b.ReadIdentityAccess(ctx, s, kind, name)
	if err != nil {
		return false, err
	}
	now := b.now().UTC()
	rec := &IdentityAccess{Name: name, Access: a.String(), Created: now, Updated: now}
	if old != nil {
		rec.Created = old.Created
	}
	entry, err := logical.StorageEntryJSON(identityKey(kind, name), rec)
	if err != nil {
		return false, err
	}
	err = s.Put(ctx, entry)
	b.identityRecords.drop(identityKey(kind, name))
	if err != nil {
		return false, fmt.Errorf("store %s access: %w", kind.noun(), err)
	}
	return old == nil, nil
}

// ReadIdentityAccess returns the stored record, or nil if there is none.
// Records are kept in memory (records.go): every identity token request
// reads those of the entity's groups, and a write drops them here.
func (b *Backend) ReadIdentityAccess(ctx context.Context, s logical.Storage, kind IdentityKind, name string) (*IdentityAccess, error) {
	if !access.ValidUserName(name) {
		return nil, nil
	}
	key := identityKey(kind, name)
	return readRecord(ctx, s, b.identityRecords, key, kind.noun()+" access", key, func(r *IdentityAccess) {
		var err error
		if r.parsed, err = access.Parse(r.Access); err != nil {
			// Validated on write; a record that no longer parses grants nothing.
			b.logger.Error("stored access string does not parse; granting nothing", kind.noun(), name, "error", err)
			r.parsed = nil
		}
	})
}

// ListIdentityAccess lists the names of the groups or entities given access.
func (b *Backend) ListIdentityAccess(ctx context.Context, s logical.Storage, kind IdentityKind) ([]string, error) {
	return s.List(ctx, string(kind)+"/")
}

// DeleteIdentityAccess removes a record; a missing one is not an error.
func (b *Backend) DeleteIdentityAccess(ctx context.Context, s logical.Storage, kind IdentityKind, name string) error {
	if err := checkIdentityName(kind, name); err != nil {
		return err
	}
	err := s.Delete(ctx, identityKey(kind, name))
	b.identityRecords.drop(identityKey(kind, name))
	if err != nil {
		return fmt.Errorf("delete %s access: %w", kind.noun(), err)
	}
	return nil
}

// identityAccess is the parsed access of one record; none when there is no
// record. A stored string that no longer parses grants nothing.
func (b *Backend) identityAccess(ctx context.Context, s logical.Storage, kind IdentityKind, name string) (access.List, error) {
	rec, err := b.ReadIdentityAccess(ctx, s, kind, name)
	if err != nil || rec == nil {
		return nil, err
	}
	return rec.parsed, nil
}

// Identity is a Vault entity as a registry user: its token's subject, the
// name ${user} stands for, and the access lists that apply to it.
type Identity struct {
	EntityID string
	Subject  string // the token's sub
	// PatternUser is what ${user} matches: the subject, or "" when the
	// subject is a fallback that could collide with a name of another kind.
	PatternUser string
	Groups      []string
	Lists       []access.List
	// Sources names each of Lists: "group <name>", "entity <name>",
	// "anonymous_access" (for access/explain).
	Sources []string
}

// ResolveIdentity reads an entity and its groups from Vault's identity
// store and the access given to them on this mount. A missing, disabled
// or unreadable entity is refused.
func (b *Backend) ResolveIdentity(ctx context.Context, s logical.Storage, cfg *Config, ids IdentitySource, entityID string) (*Identity, error) {
	if entityID == "" {
		return nil, errNoEntity
	}
	entity, err := ids.EntityInfo(entityID)
	if err != nil {
		return nil, fmt.Errorf("read identity entity %s: %w", quote(entityID), err)
	}
	if entity == nil {
		return nil, errorf(KindUnauthorized, "identity entity %s does not exist", quote(entityID))
	}
	if entity.Disabled {
		return nil, errorf(KindUnauthorized, "identity entity %s is disabled", quote(entity.Name))
	}
	groups, err := ids.GroupsForEntity(entityID)
	if err != nil {
		return nil, fmt.Errorf("read groups of identity entity %s: %w", quote(entity.Name), err)
	}
	id := &Identity{EntityID: entityID, Subject: entity.Name, PatternUser: entity.Name}
	if cfg.IdentitySubject == SubjectAliasName {
		alias := aliasOn(entity, cfg.IdentityAliasMount)
		if alias != "" {
			id.Subject, id.PatternUser = alias, alias
		} else {
			// No alias on that mount (an AppRole or a CI job, say): the
			// entity's name, but ${user} matches nothing, so that an
			// entity name can never stand for an alias of the same name.
			id.PatternUser = ""
		}
	}
	seen := map[string]bool{}
	for _, g := range groups {
		if g == nil || seen[g.Name] {
			continue
		}
		seen[g.Name] = true
		a, err := b.identityAccess(ctx, s, IdentityGroup, g.Name)
		if err != nil {
			return nil, err
		}
		id.Groups = append(id.Groups, g.Name)
		if len(a) > 0 {
			id.Lists = append(id.Lists, a)
			id.Sources = append(id.Sources, "group "+g.Name)
		}
	}
	a, err := b.identityAccess(ctx, s, IdentityEntity, entity.Name)
	if err != nil {
		return nil, err
	}
	if len(a) > 0 {
		id.Lists = append(id.Lists, a)
		id.Sources = append(id.Sources, "entity "+entity.Name)
	}
	id.Lists = append(id.Lists, cfg.Anonymous())
	id.Sources = append(id.Sources, anonymousSource)
	return id, nil
}

// aliasOn is the name of the entity's alias on the auth mount with the
// given accessor; "" when it has none there.
func aliasOn(e *logical.Entity, accessor string) string {
	for _, a := range e.Aliases {
		if a != nil && accessor != "" && a.MountAccessor == accessor {
			return a.Name
		}
	}
	return ""
}

// errNoEntity refuses a Vault token without an identity entity.
var errNoEntity = &Error{Kind: KindBadRequest, Msg: "this Vault token has no identity entity (a root token, " +
	"or a token created without one): log in through a Vault auth method (userpass, ldap, jwt, approle…) " +
	"and use that token"}

// IdentityTokenRequest is a request for a registry token for the Vault
// identity of the caller's own Vault token.
type IdentityTokenRequest struct {
	Service  string
	EntityID string // the request's entity, from Vault
	Accessor string // the accessor of the request's Vault token, from Vault
	ClientID string
	Scopes   []string
	Offline  bool
	TTL      time.Duration
	// ClientAddr is as TokenRequest's.
	ClientAddr netip.Addr
}

// TokenForIdentity grants the requested scopes that the entity's groups, the
// entity and the anonymous access allow, and signs the token. An entity in
// no configured group gets a token with no access, not an error.
func (b *Backend) TokenForIdentity(ctx context.Context, s logical.Storage, req IdentityTokenRequest) (*Token, error) {
	return b.tokenForIdentity(ctx, s, req, nil)
}

// tokenForIdentity is TokenForIdentity, resolving the entity through memo
// (nil: at once).
func (b *Backend) tokenForIdentity(ctx context.Context, s logical.Storage, req IdentityTokenRequest, memo *identityMemo) (*Token, error) {
	ids, scopes, cfg, err := b.identityRequest(ctx, s, req.Scopes, req.ClientID)
	if err != nil {
		return nil, err
	}
	id, err := memo.resolve(req.EntityID, func() (*Identity, error) { return b.ResolveIdentity(ctx, s, cfg, ids, req.EntityID) })
	if err != nil {
		return nil, err
	}
	tok, err := b.sign(ctx, s, cfg, req.Service, id.Subject, access.GrantScopes(id.PatternUser, req.ClientAddr, scopes, id.Lists...), req.TTL)
	if err != nil {
		return nil, err
	}
	if req.Offline && cfg.IdentityRefreshTokens {
		rt, err := b.issueEntityRefreshToken(ctx, s, cfg, id.EntityID, req.Accessor, req.ClientID)
		if err != nil {
			return nil, err
		}
		tok.RefreshToken, tok.IssuedRefresh = rt.Token, rt
	}
	return tok, nil
}

// validateIdentity checks identity_subject and identity_alias_mount; an
// empty identity_subject is entity_name.
func (c *Config) validateIdentity() error {
	switch c.IdentitySubject {
	case "":
		c.IdentitySubject = SubjectEntityName
	case SubjectEntityName, SubjectAliasName:
	default:
		return errorf(KindBadRequest, "identity_subject %s: must be %s or %s", quote(c.IdentitySubject), SubjectEntityName, SubjectAliasName)
	}
	if len(c.IdentityAliasMount) > 128 || !accessorRE.MatchString(c.IdentityAliasMount) {
		return errorf(KindBadRequest, "identity_alias_mount %s: an auth mount accessor such as auth_ldap_1a2b3c4d", quote(c.IdentityAliasMount))
	}
	if c.IdentitySubject == SubjectAliasName && c.IdentityAliasMount == "" {
		return errorf(KindBadRequest, "identity_subject %s needs identity_alias_mount: the accessor of the auth mount whose alias names are the subjects (vault auth list shows it)", SubjectAliasName)
	}
	return nil
}

var accessorRE = regexp.MustCompile(`^[A-Za-z0-9_.-]*$`)

// identityRequest checks what both identity token requests carry and
// returns what they need: the identity store, the scopes and the config.
func (b *Backend) identityRequest(ctx context.Context, s logical.Storage, rawScopes []string, clientID string) (IdentitySource, []access.Scope, *Config, error) {
	ids, err := b.identitySource()
	if err != nil {
		return nil, nil, nil, err
	}
	scopes, cfg, err := b.openTokenRequest(ctx, s, rawScopes, clientID)
	if err != nil {
		return nil, nil, nil, err
	}
	return ids, scopes, cfg, nil
}
