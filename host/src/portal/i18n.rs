//! Every user-visible string of the portal, one table per language.
//!
//! Templates read them as `t.<key>`; Rust code through [`text`]. English is
//! the default, German is chosen with `?lang=de` (remembered in a cookie).
//! Both tables must have the same keys (a unit test checks it).

use std::collections::BTreeMap;
use std::sync::OnceLock;

/// A portal language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// English (default).
    En,
    /// German.
    De,
}

impl Lang {
    /// Parses `en` / `de` (case-insensitive); anything else is `None`.
    pub fn parse(s: &str) -> Option<Lang> {
        match s.trim().to_ascii_lowercase().as_str() {
            "en" => Some(Lang::En),
            "de" => Some(Lang::De),
            _ => None,
        }
    }

    /// The language code (`en` or `de`).
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::De => "de",
        }
    }
}

/// English strings.
const EN: &[(&str, &str)] = &[
    ("app_name", "LeanSync Voice"),
    ("portal", "Admin portal"),
    ("skip_to_content", "Skip to content"),
    ("language", "Language"),
    // login
    ("login_title", "Sign in"),
    ("login_intro", "Sign in with your personal account."),
    ("email", "E-mail"),
    ("password", "Password"),
    ("sign_in", "Sign in"),
    ("sign_out", "Sign out"),
    ("login_failed", "E-mail or password is wrong."),
    (
        "login_locked",
        "Too many failed sign-ins for this e-mail from your network. Wait 5 minutes, then try again.",
    ),
    (
        "login_locked_source",
        "Too many failed sign-ins from your network. Wait 15 minutes, then try again.",
    ),
    (
        "login_busy",
        "The service is checking many sign-ins at once. Try again in a second.",
    ),
    ("signed_in_as", "Signed in as"),
    ("operator", "Operator"),
    ("customer_admin", "Customer admin"),
    ("impersonal", "Shared account"),
    (
        "impersonal_hint",
        "Shared (impersonal) account: actions cannot be traced to a person. Personal accounts are recommended.",
    ),
    // errors
    ("error", "Error"),
    ("not_found_title", "Not found"),
    (
        "not_found_text",
        "This page does not exist, or it is not visible to your account.",
    ),
    ("forbidden_title", "Not allowed"),
    ("forbidden_text", "Your account may not do this."),
    ("csrf_title", "Form expired"),
    (
        "csrf_text",
        "This form was not sent from a current page of this portal (its security token is missing or out of date), so nothing was changed. Go back, reload the page and try again.",
    ),
    ("internal_title", "Something went wrong"),
    (
        "internal_text",
        "The request failed on the server. The details are in the host log.",
    ),
    ("back_home", "Back to the start page"),
    ("field_required", "This field is required."),
    ("not_a_number", "Enter a number."),
    ("form_has_errors", "Please correct the marked fields."),
    // navigation
    ("nav_customers", "Customers"),
    ("nav_prices", "Price list"),
    ("nav_plugins", "Plugins"),
    ("nav_health", "System health"),
    ("nav_audit_all", "Audit log"),
    ("nav_dead_letters", "Dead letters"),
    ("nav_overview", "Overview"),
    ("nav_accounts", "Admins"),
    ("nav_telephony", "Telephony"),
    ("nav_numbers", "Numbers"),
    ("nav_apps", "Applications"),
    ("nav_licenses", "Licenses"),
    ("nav_keys", "LeanSync Keys"),
    ("nav_usage", "Usage"),
    ("nav_billing", "Billing"),
    ("nav_audit", "Audit log"),
    ("nav_deliveries", "Deliveries"),
    ("nav_password", "My password"),
    ("customer_nav", "Customer sections"),
    ("main_nav", "Main navigation"),
    // common
    ("id", "ID"),
    ("name", "Name"),
    ("status", "Status"),
    ("actions", "Actions"),
    ("save", "Save"),
    ("create", "Create"),
    ("yes", "yes"),
    ("no", "no"),
    ("none", "—"),
    ("optional", "optional"),
    ("required_mark", "required"),
    ("download_csv", "Download CSV"),
    ("filter", "Filter"),
    ("reset", "Reset"),
    ("continue", "Continue"),
    ("copy", "Copy"),
    ("copied", "Copied"),
    // customers
    ("customers_title", "Customers"),
    (
        "customers_empty",
        "No customers yet. Create the first one below.",
    ),
    ("new_customer", "New customer"),
    ("customer_name", "Customer name"),
    ("customer_created", "Customer created."),
    ("blocked", "Blocked"),
    ("active", "Active"),
    ("block", "Block"),
    ("unblock", "Unblock"),
    ("block_reason", "Reason for blocking"),
    (
        "block_reason_help",
        "Shown to the customer and kept in the audit log.",
    ),
    ("customer_blocked", "Customer blocked."),
    ("customer_unblocked", "Customer unblocked."),
    ("blocked_banner", "This customer is blocked:"),
    ("open", "Open"),
    // overview
    ("overview_title", "Overview"),
    ("notifications", "Notifications"),
    ("notifications_empty", "No notifications."),
    ("ordered_waiting", "Licenses waiting for provisioning"),
    // accounts
    ("accounts_title", "Admin accounts"),
    ("accounts_empty", "No admin accounts yet."),
    ("new_admin", "New customer admin"),
    ("role", "Role"),
    (
        "impersonal_checkbox",
        "Shared (impersonal) account — not recommended",
    ),
    ("initial_password", "Initial password"),
    (
        "initial_password_help",
        "At least 10 characters. Leave empty to let the admin sign in only after a password is set.",
    ),
    ("account_created", "Account created."),
    ("api_token", "API token"),
    // secrets shown once
    ("secret_title", "Shown only once"),
    (
        "secret_warning",
        "Copy this now and store it safely. It is shown only this once and cannot be displayed again; if it is lost, generate a new one.",
    ),
    ("key_title", "New LeanSync Key"),
    (
        "key_rotated_note",
        "Earlier keys of this license are revoked now. Give this key to the business application.",
    ),
    (
        "key_provisioned_note",
        "The license is provisioned and billing starts today. Give this key to the customer's business application.",
    ),
    // telephony
    ("telephony_title", "Telephony accounts"),
    (
        "telephony_empty",
        "No telephony account connected yet. Connect one below.",
    ),
    ("new_telephony", "Connect a telephony account"),
    ("provider", "Provider"),
    ("provider_sim", "Simulated PBX (sim)"),
    ("provider_sip", "SIP (sip)"),
    ("account_numbers_field", "Numbers of the account"),
    (
        "account_numbers_help",
        "One number per line, as the provider lists them (e.g. 044 123 45 67).",
    ),
    ("sip_server", "PBX address (host:port)"),
    ("sip_only", "SIP only"),
    ("connection", "Connection"),
    ("username", "SIP user name"),
    ("pbx_secret", "Password of the telephony account"),
    ("pbx_secret_help", "Stored encrypted and never shown again."),
    ("telephony_created", "Telephony account connected."),
    ("consent", "Consent"),
    ("consent_given", "Consent given by"),
    ("consent_missing", "No consent"),
    ("give_consent", "Give consent"),
    ("revoke_consent", "Revoke consent"),
    (
        "consent_revoked",
        "Consent revoked. Monitoring and click-to-call stopped.",
    ),
    ("consent_granted", "Consent recorded."),
    ("import_numbers", "Import numbers"),
    ("secret_stored", "Secret stored"),
    // consent page
    ("consent_title", "Consent to read the account's numbers"),
    (
        "consent_what",
        "LeanSync Voice will read the following from this telephony account:",
    ),
    ("consent_item_numbers", "the phone numbers of the account:"),
    (
        "consent_purpose",
        "They are used only to recognise calls on numbers you license and to place click-to-calls you start. Call audio, contacts and other data of the account are not read.",
    ),
    (
        "consent_revoke_note",
        "You can revoke this consent at any time; monitoring and click-to-call stop at once.",
    ),
    (
        "consent_checkbox",
        "I consent that LeanSync Voice reads the phone numbers of this telephony account for the purpose described above.",
    ),
    (
        "consent_checkbox_required",
        "Tick the box to confirm your consent.",
    ),
    (
        "consent_operator_note",
        "Consent must be given by an admin of the customer; operators cannot give it.",
    ),
    (
        "consent_no_numbers",
        "The account lists no numbers at the moment.",
    ),
    // import
    ("import_title", "Import numbers"),
    (
        "import_intro",
        "Select the numbers of the telephony account to import.",
    ),
    (
        "import_needs_consent",
        "Numbers can be imported only after consent was given.",
    ),
    ("import_none_selected", "Select at least one number."),
    ("numbers_imported", "Numbers imported."),
    // numbers
    ("numbers_title", "Numbers"),
    (
        "numbers_empty",
        "No numbers yet. Connect a telephony account, give consent and import its numbers.",
    ),
    ("e164", "E.164"),
    ("national", "National form"),
    ("telephony_account", "Telephony account"),
    ("licensed_for", "Licensed for"),
    // applications
    ("apps_title", "Business applications"),
    (
        "apps_empty",
        "No business application enabled yet. Choose a connector below.",
    ),
    ("connector", "Connector"),
    ("config", "Configuration"),
    ("granted_hosts", "Granted outbound hosts"),
    (
        "granted_hosts_help",
        "Hosts the connector may call, separated by commas or new lines (e.g. crm.example.ch, *.example.ch). Nothing else is reachable for it.",
    ),
    ("asks_for_hosts", "The connector asks for:"),
    ("deliver_internal", "Also deliver internal calls"),
    ("available_connectors", "Available connectors"),
    ("connectors_empty", "No connector is loaded."),
    ("enable", "Enable"),
    ("enable_title", "Enable a business application"),
    (
        "secret_field_help",
        "Secret: stored encrypted, never shown again.",
    ),
    ("installation_created", "Business application enabled."),
    ("unknown_connector", "This connector is not loaded."),
    // licenses
    ("licenses_title", "Licenses"),
    (
        "licenses_empty",
        "No licenses yet. Order licenses for a business application below.",
    ),
    ("order_licenses", "Order licenses"),
    ("application", "Business application"),
    ("count", "Number of licenses"),
    ("order", "Order"),
    (
        "licenses_ordered",
        "Licenses ordered. An operator provisions them.",
    ),
    ("order_needs_app", "Enable a business application first."),
    ("state", "State"),
    ("state_ordered", "ordered"),
    ("state_provisioned", "provisioned"),
    ("state_cancelled", "cancelled"),
    ("number", "Number"),
    ("keys", "Keys"),
    ("provision", "Provision"),
    ("assign", "Assign"),
    ("assign_to", "Assign to number"),
    ("license_assigned", "License assigned."),
    ("cancel_license", "Cancel license"),
    (
        "license_cancelled",
        "License cancelled. Billing stops today.",
    ),
    ("waiting_for_operator", "waiting for an operator"),
    ("available", "Available"),
    ("assigned", "Assigned"),
    ("ordered", "Ordered"),
    ("provisioned", "Provisioned"),
    (
        "no_numbers_to_assign",
        "No numbers to assign; import numbers first.",
    ),
    // keys
    ("keys_title", "LeanSync Keys"),
    (
        "keys_intro",
        "A LeanSync Key lets a business application receive the calls of one license. Keys are shown only when they are generated; here they are masked.",
    ),
    (
        "keys_empty",
        "No provisioned license yet, so there are no keys.",
    ),
    ("rotate_key", "Generate new key"),
    ("revoke", "Revoke"),
    ("key_revoked", "Key revoked. It stops working at once."),
    ("revoked", "revoked"),
    ("active_key", "active"),
    ("key_blocked", "blocked"),
    // usage
    ("usage_title", "Usage report"),
    ("generated_at", "Generated at"),
    (
        "usage_empty",
        "No business application yet, so there is no usage.",
    ),
    ("license", "License"),
    // billing
    ("billing_title", "Billing preview"),
    ("current_month", "Current month"),
    ("previous_month", "Previous month"),
    ("billing_empty", "Nothing is charged for this month."),
    ("from", "From"),
    ("to", "To"),
    ("days", "Days"),
    ("amount", "Amount (CHF)"),
    ("subtotal", "Subtotal"),
    ("total", "Total due (rounded to 0.05)"),
    ("missing_prices", "No price set for:"),
    // audit
    ("audit_title", "Audit log"),
    ("audit_empty", "No entries match."),
    ("when", "When"),
    ("who", "Who"),
    ("action", "Action"),
    ("target", "Target"),
    ("details", "Details"),
    ("user", "User"),
    ("date_from", "From date"),
    ("date_to", "To date"),
    ("customer", "Customer"),
    ("audit_limited", "Showing the newest 500 entries of"),
    // deliveries
    ("deliveries_title", "Deliveries"),
    ("deliveries_empty", "No deliveries yet."),
    ("dead_letters_title", "Dead letters"),
    ("dead_letters_empty", "No dead letters."),
    ("call", "Call"),
    ("attempts", "Attempts"),
    ("last_error", "Last error"),
    ("redrive", "Re-drive"),
    ("redriven", "Delivery queued again."),
    ("not_dead", "This delivery is not a dead letter any more."),
    // prices
    ("prices_title", "Price list"),
    ("prices_empty", "No prices set yet."),
    ("valid_from", "Valid from (YYYY-MM-DD)"),
    ("monthly_chf", "Monthly price per license (CHF)"),
    ("set_price", "Set price"),
    ("price_saved", "Price saved."),
    // plugins
    ("plugins_title", "Plugin catalogue"),
    ("plugins_empty", "No plugin is loaded."),
    ("version", "Version"),
    ("api_version", "API version"),
    ("description", "Description"),
    // health
    ("health_title", "System health"),
    ("health_ok", "Ready: the host can do its job."),
    ("health_problems", "The host is not ready:"),
    ("telephony_status", "Telephony"),
    ("connected", "connected"),
    ("not_connected", "not connected"),
    ("plugins_loaded", "Plugins"),
    ("degraded_plugins", "degraded or failed"),
    // password
    ("password_title", "Change my password"),
    ("current_password", "Current password"),
    ("new_password", "New password"),
    ("new_password_help", "At least 10 characters."),
    ("confirm_password", "Repeat the new password"),
    ("passwords_differ", "The two passwords differ."),
    ("current_password_wrong", "The current password is wrong."),
    ("password_saved", "Password changed."),
];

/// German strings.
const DE: &[(&str, &str)] = &[
    ("app_name", "LeanSync Voice"),
    ("portal", "Admin-Portal"),
    ("skip_to_content", "Zum Inhalt springen"),
    ("language", "Sprache"),
    ("login_title", "Anmelden"),
    (
        "login_intro",
        "Melden Sie sich mit Ihrem persönlichen Konto an.",
    ),
    ("email", "E-Mail"),
    ("password", "Passwort"),
    ("sign_in", "Anmelden"),
    ("sign_out", "Abmelden"),
    ("login_failed", "E-Mail oder Passwort ist falsch."),
    (
        "login_locked",
        "Zu viele fehlgeschlagene Anmeldungen für diese E-Mail aus Ihrem Netz. Warten Sie 5 Minuten und versuchen Sie es dann erneut.",
    ),
    (
        "login_locked_source",
        "Zu viele fehlgeschlagene Anmeldungen aus Ihrem Netz. Warten Sie 15 Minuten und versuchen Sie es dann erneut.",
    ),
    (
        "login_busy",
        "Der Dienst prüft gerade viele Anmeldungen. Versuchen Sie es in einer Sekunde erneut.",
    ),
    ("signed_in_as", "Angemeldet als"),
    ("operator", "Betreiber"),
    ("customer_admin", "Kunden-Admin"),
    ("impersonal", "Unpersönliches Konto"),
    (
        "impersonal_hint",
        "Unpersönliches (geteiltes) Konto: Aktionen lassen sich keiner Person zuordnen. Persönliche Konten werden empfohlen.",
    ),
    ("error", "Fehler"),
    ("not_found_title", "Nicht gefunden"),
    (
        "not_found_text",
        "Diese Seite existiert nicht oder ist für Ihr Konto nicht sichtbar.",
    ),
    ("forbidden_title", "Nicht erlaubt"),
    ("forbidden_text", "Ihr Konto darf das nicht."),
    ("csrf_title", "Formular abgelaufen"),
    (
        "csrf_text",
        "Dieses Formular stammt nicht von einer aktuellen Seite dieses Portals (sein Sicherheits-Token fehlt oder ist veraltet), daher wurde nichts geändert. Gehen Sie zurück, laden Sie die Seite neu und versuchen Sie es noch einmal.",
    ),
    ("internal_title", "Etwas ist schiefgegangen"),
    (
        "internal_text",
        "Die Anfrage ist auf dem Server fehlgeschlagen. Details stehen im Log des Hosts.",
    ),
    ("back_home", "Zurück zur Startseite"),
    ("field_required", "Dieses Feld ist erforderlich."),
    ("not_a_number", "Geben Sie eine Zahl ein."),
    (
        "form_has_errors",
        "Bitte korrigieren Sie die markierten Felder.",
    ),
    ("nav_customers", "Kunden"),
    ("nav_prices", "Preisliste"),
    ("nav_plugins", "Plugins"),
    ("nav_health", "Systemzustand"),
    ("nav_audit_all", "Audit-Log"),
    ("nav_dead_letters", "Unzustellbare"),
    ("nav_overview", "Übersicht"),
    ("nav_accounts", "Admins"),
    ("nav_telephony", "Telefonie"),
    ("nav_numbers", "Nummern"),
    ("nav_apps", "Anwendungen"),
    ("nav_licenses", "Lizenzen"),
    ("nav_keys", "LeanSync Keys"),
    ("nav_usage", "Mengenreport"),
    ("nav_billing", "Abrechnung"),
    ("nav_audit", "Audit-Log"),
    ("nav_deliveries", "Zustellungen"),
    ("nav_password", "Mein Passwort"),
    ("customer_nav", "Kundenbereiche"),
    ("main_nav", "Hauptnavigation"),
    ("id", "ID"),
    ("name", "Name"),
    ("status", "Status"),
    ("actions", "Aktionen"),
    ("save", "Speichern"),
    ("create", "Anlegen"),
    ("yes", "ja"),
    ("no", "nein"),
    ("none", "—"),
    ("optional", "optional"),
    ("required_mark", "erforderlich"),
    ("download_csv", "CSV herunterladen"),
    ("filter", "Filtern"),
    ("reset", "Zurücksetzen"),
    ("continue", "Weiter"),
    ("copy", "Kopieren"),
    ("copied", "Kopiert"),
    ("customers_title", "Kunden"),
    (
        "customers_empty",
        "Noch keine Kunden. Legen Sie unten den ersten an.",
    ),
    ("new_customer", "Neuer Kunde"),
    ("customer_name", "Name des Kunden"),
    ("customer_created", "Kunde angelegt."),
    ("blocked", "Gesperrt"),
    ("active", "Aktiv"),
    ("block", "Sperren"),
    ("unblock", "Entsperren"),
    ("block_reason", "Grund der Sperre"),
    (
        "block_reason_help",
        "Wird dem Kunden angezeigt und im Audit-Log festgehalten.",
    ),
    ("customer_blocked", "Kunde gesperrt."),
    ("customer_unblocked", "Kunde entsperrt."),
    ("blocked_banner", "Dieser Kunde ist gesperrt:"),
    ("open", "Öffnen"),
    ("overview_title", "Übersicht"),
    ("notifications", "Benachrichtigungen"),
    ("notifications_empty", "Keine Benachrichtigungen."),
    ("ordered_waiting", "Lizenzen, die auf Bereitstellung warten"),
    ("accounts_title", "Admin-Konten"),
    ("accounts_empty", "Noch keine Admin-Konten."),
    ("new_admin", "Neuer Kunden-Admin"),
    ("role", "Rolle"),
    (
        "impersonal_checkbox",
        "Unpersönliches (geteiltes) Konto — nicht empfohlen",
    ),
    ("initial_password", "Anfangspasswort"),
    (
        "initial_password_help",
        "Mindestens 10 Zeichen. Leer lassen: Anmeldung erst möglich, wenn ein Passwort gesetzt ist.",
    ),
    ("account_created", "Konto angelegt."),
    ("api_token", "API-Token"),
    ("secret_title", "Nur einmal sichtbar"),
    (
        "secret_warning",
        "Kopieren Sie diesen Wert jetzt und bewahren Sie ihn sicher auf. Er wird nur dieses eine Mal angezeigt; geht er verloren, erzeugen Sie einen neuen.",
    ),
    ("key_title", "Neuer LeanSync Key"),
    (
        "key_rotated_note",
        "Frühere Keys dieser Lizenz sind jetzt widerrufen. Geben Sie diesen Key der Geschäftsanwendung.",
    ),
    (
        "key_provisioned_note",
        "Die Lizenz ist bereitgestellt, die Verrechnung beginnt heute. Geben Sie diesen Key der Geschäftsanwendung des Kunden.",
    ),
    ("telephony_title", "Telefonie-Konten"),
    (
        "telephony_empty",
        "Noch kein Telefonie-Konto verbunden. Verbinden Sie unten eines.",
    ),
    ("new_telephony", "Telefonie-Konto verbinden"),
    ("provider", "Anbieter"),
    ("provider_sim", "Simulierte Telefonanlage (sim)"),
    ("provider_sip", "SIP (sip)"),
    ("account_numbers_field", "Nummern des Kontos"),
    (
        "account_numbers_help",
        "Eine Nummer pro Zeile, so wie der Anbieter sie führt (z. B. 044 123 45 67).",
    ),
    ("sip_server", "PBX-Adresse (Host:Port)"),
    ("sip_only", "nur SIP"),
    ("connection", "Verbindung"),
    ("username", "SIP-Benutzername"),
    ("pbx_secret", "Passwort des Telefonie-Kontos"),
    (
        "pbx_secret_help",
        "Wird verschlüsselt gespeichert und nie wieder angezeigt.",
    ),
    ("telephony_created", "Telefonie-Konto verbunden."),
    ("consent", "Einwilligung"),
    ("consent_given", "Einwilligung erteilt von"),
    ("consent_missing", "Keine Einwilligung"),
    ("give_consent", "Einwilligung erteilen"),
    ("revoke_consent", "Einwilligung widerrufen"),
    (
        "consent_revoked",
        "Einwilligung widerrufen. Überwachung und Click-to-Call sind gestoppt.",
    ),
    ("consent_granted", "Einwilligung erfasst."),
    ("import_numbers", "Nummern importieren"),
    ("secret_stored", "Geheimnis gespeichert"),
    (
        "consent_title",
        "Einwilligung zum Lesen der Nummern des Kontos",
    ),
    (
        "consent_what",
        "LeanSync Voice liest Folgendes aus diesem Telefonie-Konto:",
    ),
    ("consent_item_numbers", "die Telefonnummern des Kontos:"),
    (
        "consent_purpose",
        "Sie dienen nur dazu, Anrufe auf lizenzierten Nummern zu erkennen und von Ihnen gestartete Click-to-Calls aufzubauen. Gesprächsinhalte, Kontakte und andere Daten des Kontos werden nicht gelesen.",
    ),
    (
        "consent_revoke_note",
        "Sie können diese Einwilligung jederzeit widerrufen; Überwachung und Click-to-Call stoppen sofort.",
    ),
    (
        "consent_checkbox",
        "Ich willige ein, dass LeanSync Voice die Telefonnummern dieses Telefonie-Kontos zum oben beschriebenen Zweck liest.",
    ),
    (
        "consent_checkbox_required",
        "Kreuzen Sie das Feld an, um Ihre Einwilligung zu bestätigen.",
    ),
    (
        "consent_operator_note",
        "Die Einwilligung muss ein Admin des Kunden erteilen; Betreiber können sie nicht erteilen.",
    ),
    (
        "consent_no_numbers",
        "Das Konto führt derzeit keine Nummern.",
    ),
    ("import_title", "Nummern importieren"),
    (
        "import_intro",
        "Wählen Sie die Nummern des Telefonie-Kontos, die importiert werden sollen.",
    ),
    (
        "import_needs_consent",
        "Nummern können erst nach erteilter Einwilligung importiert werden.",
    ),
    ("import_none_selected", "Wählen Sie mindestens eine Nummer."),
    ("numbers_imported", "Nummern importiert."),
    ("numbers_title", "Nummern"),
    (
        "numbers_empty",
        "Noch keine Nummern. Verbinden Sie ein Telefonie-Konto, erteilen Sie die Einwilligung und importieren Sie seine Nummern.",
    ),
    ("e164", "E.164"),
    ("national", "Nationale Schreibweise"),
    ("telephony_account", "Telefonie-Konto"),
    ("licensed_for", "Lizenziert für"),
    ("apps_title", "Geschäftsanwendungen"),
    (
        "apps_empty",
        "Noch keine Geschäftsanwendung aktiviert. Wählen Sie unten einen Connector.",
    ),
    ("connector", "Connector"),
    ("config", "Konfiguration"),
    ("granted_hosts", "Freigegebene Ziel-Hosts"),
    (
        "granted_hosts_help",
        "Hosts, die der Connector aufrufen darf, durch Kommas oder Zeilen getrennt (z. B. crm.example.ch, *.example.ch). Nichts anderes ist für ihn erreichbar.",
    ),
    ("asks_for_hosts", "Der Connector verlangt:"),
    ("deliver_internal", "Auch interne Anrufe zustellen"),
    ("available_connectors", "Verfügbare Connectoren"),
    ("connectors_empty", "Kein Connector geladen."),
    ("enable", "Aktivieren"),
    ("enable_title", "Geschäftsanwendung aktivieren"),
    (
        "secret_field_help",
        "Geheim: wird verschlüsselt gespeichert und nie wieder angezeigt.",
    ),
    ("installation_created", "Geschäftsanwendung aktiviert."),
    ("unknown_connector", "Dieser Connector ist nicht geladen."),
    ("licenses_title", "Lizenzen"),
    (
        "licenses_empty",
        "Noch keine Lizenzen. Bestellen Sie unten Lizenzen für eine Geschäftsanwendung.",
    ),
    ("order_licenses", "Lizenzen bestellen"),
    ("application", "Geschäftsanwendung"),
    ("count", "Anzahl Lizenzen"),
    ("order", "Bestellen"),
    (
        "licenses_ordered",
        "Lizenzen bestellt. Ein Betreiber stellt sie bereit.",
    ),
    (
        "order_needs_app",
        "Aktivieren Sie zuerst eine Geschäftsanwendung.",
    ),
    ("state", "Zustand"),
    ("state_ordered", "bestellt"),
    ("state_provisioned", "bereitgestellt"),
    ("state_cancelled", "gekündigt"),
    ("number", "Nummer"),
    ("keys", "Keys"),
    ("provision", "Bereitstellen"),
    ("assign", "Zuweisen"),
    ("assign_to", "Einer Nummer zuweisen"),
    ("license_assigned", "Lizenz zugewiesen."),
    ("cancel_license", "Lizenz kündigen"),
    (
        "license_cancelled",
        "Lizenz gekündigt. Die Verrechnung endet heute.",
    ),
    ("waiting_for_operator", "wartet auf einen Betreiber"),
    ("available", "Verfügbar"),
    ("assigned", "Zugewiesen"),
    ("ordered", "Bestellt"),
    ("provisioned", "Bereitgestellt"),
    (
        "no_numbers_to_assign",
        "Keine Nummern zum Zuweisen; importieren Sie zuerst Nummern.",
    ),
    ("keys_title", "LeanSync Keys"),
    (
        "keys_intro",
        "Ein LeanSync Key lässt eine Geschäftsanwendung die Anrufe einer Lizenz empfangen. Keys werden nur beim Erzeugen angezeigt; hier sind sie maskiert.",
    ),
    (
        "keys_empty",
        "Noch keine bereitgestellte Lizenz, daher keine Keys.",
    ),
    ("rotate_key", "Neuen Key erzeugen"),
    ("revoke", "Widerrufen"),
    (
        "key_revoked",
        "Key widerrufen. Er funktioniert ab sofort nicht mehr.",
    ),
    ("revoked", "widerrufen"),
    ("active_key", "aktiv"),
    ("key_blocked", "gesperrt"),
    ("usage_title", "Mengenreport"),
    ("generated_at", "Erstellt am"),
    (
        "usage_empty",
        "Noch keine Geschäftsanwendung, daher keine Nutzung.",
    ),
    ("license", "Lizenz"),
    ("billing_title", "Abrechnungsvorschau"),
    ("current_month", "Aktueller Monat"),
    ("previous_month", "Vormonat"),
    ("billing_empty", "Für diesen Monat wird nichts verrechnet."),
    ("from", "Von"),
    ("to", "Bis"),
    ("days", "Tage"),
    ("amount", "Betrag (CHF)"),
    ("subtotal", "Zwischensumme"),
    ("total", "Total (auf 0.05 gerundet)"),
    ("missing_prices", "Kein Preis festgelegt für:"),
    ("audit_title", "Audit-Log"),
    ("audit_empty", "Keine passenden Einträge."),
    ("when", "Wann"),
    ("who", "Wer"),
    ("action", "Aktion"),
    ("target", "Ziel"),
    ("details", "Details"),
    ("user", "Benutzer"),
    ("date_from", "Ab Datum"),
    ("date_to", "Bis Datum"),
    ("customer", "Kunde"),
    (
        "audit_limited",
        "Angezeigt werden die neuesten 500 Einträge von",
    ),
    ("deliveries_title", "Zustellungen"),
    ("deliveries_empty", "Noch keine Zustellungen."),
    ("dead_letters_title", "Unzustellbare Ereignisse"),
    ("dead_letters_empty", "Keine unzustellbaren Ereignisse."),
    ("call", "Anruf"),
    ("attempts", "Versuche"),
    ("last_error", "Letzter Fehler"),
    ("redrive", "Erneut zustellen"),
    ("redriven", "Zustellung erneut eingereiht."),
    ("not_dead", "Diese Zustellung ist nicht mehr unzustellbar."),
    ("prices_title", "Preisliste"),
    ("prices_empty", "Noch keine Preise festgelegt."),
    ("valid_from", "Gültig ab (JJJJ-MM-TT)"),
    ("monthly_chf", "Monatspreis pro Lizenz (CHF)"),
    ("set_price", "Preis festlegen"),
    ("price_saved", "Preis gespeichert."),
    ("plugins_title", "Plugin-Katalog"),
    ("plugins_empty", "Kein Plugin geladen."),
    ("version", "Version"),
    ("api_version", "API-Version"),
    ("description", "Beschreibung"),
    ("health_title", "Systemzustand"),
    ("health_ok", "Bereit: Der Host kann seine Arbeit tun."),
    ("health_problems", "Der Host ist nicht bereit:"),
    ("telephony_status", "Telefonie"),
    ("connected", "verbunden"),
    ("not_connected", "nicht verbunden"),
    ("plugins_loaded", "Plugins"),
    ("degraded_plugins", "beeinträchtigt oder fehlgeschlagen"),
    ("password_title", "Mein Passwort ändern"),
    ("current_password", "Aktuelles Passwort"),
    ("new_password", "Neues Passwort"),
    ("new_password_help", "Mindestens 10 Zeichen."),
    ("confirm_password", "Neues Passwort wiederholen"),
    (
        "passwords_differ",
        "Die beiden Passwörter sind verschieden.",
    ),
    (
        "current_password_wrong",
        "Das aktuelle Passwort ist falsch.",
    ),
    ("password_saved", "Passwort geändert."),
];

/// The table of `lang` as a map (for templates).
pub fn table(lang: Lang) -> &'static BTreeMap<&'static str, &'static str> {
    static EN_MAP: OnceLock<BTreeMap<&str, &str>> = OnceLock::new();
    static DE_MAP: OnceLock<BTreeMap<&str, &str>> = OnceLock::new();
    match lang {
        Lang::En => EN_MAP.get_or_init(|| EN.iter().copied().collect()),
        Lang::De => DE_MAP.get_or_init(|| DE.iter().copied().collect()),
    }
}

/// One string; the key itself when it is missing (visible, never a panic).
pub fn text(lang: Lang, key: &str) -> &'static str {
    table(lang)
        .get(key)
        .copied()
        .or_else(|| table(Lang::En).get(key).copied())
        .unwrap_or("?")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_languages_have_the_same_keys() {
        let en: Vec<&str> = table(Lang::En).keys().copied().collect();
        let de: Vec<&str> = table(Lang::De).keys().copied().collect();
        assert_eq!(en, de);
        assert_eq!(en.len(), EN.len(), "duplicate key in EN");
        assert_eq!(de.len(), DE.len(), "duplicate key in DE");
    }
}
