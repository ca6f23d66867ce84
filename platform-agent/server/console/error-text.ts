/**
 * The words of errors from `../security/` (English RelayError messages) in the console's
 * language: a message the catalog knows by its error code (`error.<CODE>`), or by code, field and
 * English text (FIELD_MESSAGES), is translated; any other is shown as it is.
 */
import type { RelayError } from '../../../shared/errors.js';
import { NO_OPERATION_MESSAGE } from '../security/groups.js';
import { DEFAULT_LANGUAGE, hasMessage, language, t, type MessageKey } from './i18n/i18n.js';

/** Field-level messages the console translates: `code|field|message` (the message without its `field: ` prefix). */
const FIELD_MESSAGES: Record<string, MessageKey> = {
  [`PLATFORM_ERR_INVALID_REQUEST|operations|${NO_OPERATION_MESSAGE}`]: 'err.no_operation',
};

/** The message of an error page: in English the error's own (it may name details); else by its code when the catalog has it. */
export function errorMessage(err: RelayError): string {
  const key = `error.${err.code}`;
  return language() !== DEFAULT_LANGUAGE && hasMessage(key) ? t(key) : err.message;
}

/** A field's validation message (`message` without its `field: ` prefix) in the console's language when known. */
export function fieldMessage(code: string, field: string, message: string): string {
  const key = FIELD_MESSAGES[`${code}|${field}|${message}`];
  return key ? t(key) : message;
}
