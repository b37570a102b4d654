"""Language, script and country names for prompts, from codes found in file names and fields.

Tasks are run on languages that are not in the repository's data, so nothing here is a whitelist: a
code missing from the tables is kept as it is (``language_name("xx") == "xx"``) and the prompt still
works. ``langcodes`` is used when it happens to be installed; otherwise the built-in ISO 639-1 table
(all 184 codes), common ISO 639-2/3 codes, ISO 15924 scripts and ISO 3166-1 countries serve.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

# ISO 639-1, complete, plus the ISO 639-2/3 codes data sets commonly use.
LANGUAGES: dict[str, str] = {
    "aa": "Afar", "ab": "Abkhazian", "ae": "Avestan", "af": "Afrikaans", "ak": "Akan", "am": "Amharic",
    "an": "Aragonese", "ar": "Arabic", "as": "Assamese", "av": "Avaric", "ay": "Aymara", "az": "Azerbaijani",
    "ba": "Bashkir", "be": "Belarusian", "bg": "Bulgarian", "bh": "Bihari", "bi": "Bislama", "bm": "Bambara",
    "bn": "Bengali", "bo": "Tibetan", "br": "Breton", "bs": "Bosnian", "ca": "Catalan", "ce": "Chechen",
    "ch": "Chamorro", "co": "Corsican", "cr": "Cree", "cs": "Czech", "cu": "Church Slavic", "cv": "Chuvash",
    "cy": "Welsh", "da": "Danish", "de": "German", "dv": "Dhivehi", "dz": "Dzongkha", "ee": "Ewe",
    "el": "Greek", "en": "English", "eo": "Esperanto", "es": "Spanish", "et": "Estonian", "eu": "Basque",
    "fa": "Persian", "ff": "Fulah", "fi": "Finnish", "fj": "Fijian", "fo": "Faroese", "fr": "French",
    "fy": "Western Frisian", "ga": "Irish", "gd": "Scottish Gaelic", "gl": "Galician", "gn": "Guarani",
    "gu": "Gujarati", "gv": "Manx", "ha": "Hausa", "he": "Hebrew", "hi": "Hindi", "ho": "Hiri Motu",
    "hr": "Croatian", "ht": "Haitian Creole", "hu": "Hungarian", "hy": "Armenian", "hz": "Herero",
    "ia": "Interlingua", "id": "Indonesian", "ie": "Interlingue", "ig": "Igbo", "ii": "Sichuan Yi",
    "ik": "Inupiaq", "io": "Ido", "is": "Icelandic", "it": "Italian", "iu": "Inuktitut", "ja": "Japanese",
    "jv": "Javanese", "ka": "Georgian", "kg": "Kongo", "ki": "Kikuyu", "kj": "Kuanyama", "kk": "Kazakh",
    "kl": "Kalaallisut", "km": "Khmer", "kn": "Kannada", "ko": "Korean", "kr": "Kanuri", "ks": "Kashmiri",
    "ku": "Kurdish", "kv": "Komi", "kw": "Cornish", "ky": "Kyrgyz", "la": "Latin", "lb": "Luxembourgish",
    "lg": "Ganda", "li": "Limburgish", "ln": "Lingala", "lo": "Lao", "lt": "Lithuanian", "lu": "Luba-Katanga",
    "lv": "Latvian", "mg": "Malagasy", "mh": "Marshallese", "mi": "Maori", "mk": "Macedonian",
    "ml": "Malayalam", "mn": "Mongolian", "mr": "Marathi", "ms": "Malay", "mt": "Maltese", "my": "Burmese",
    "na": "Nauru", "nb": "Norwegian Bokmål", "nd": "North Ndebele", "ne": "Nepali", "ng": "Ndonga",
    "nl": "Dutch", "nn": "Norwegian Nynorsk", "no": "Norwegian", "nr": "South Ndebele", "nv": "Navajo",
    "ny": "Chichewa", "oc": "Occitan", "oj": "Ojibwa", "om": "Oromo", "or": "Odia", "os": "Ossetian",
    "pa": "Punjabi", "pi": "Pali", "pl": "Polish", "ps": "Pashto", "pt": "Portuguese", "qu": "Quechua",
    "rm": "Romansh", "rn": "Kirundi", "ro": "Romanian", "ru": "Russian", "rw": "Kinyarwanda",
    "sa": "Sanskrit", "sc": "Sardinian", "sd": "Sindhi", "se": "Northern Sami", "sg": "Sango",
    "si": "Sinhala", "sk": "Slovak", "sl": "Slovenian", "sm": "Samoan", "sn": "Shona", "so": "Somali",
    "sq": "Albanian", "sr": "Serbian", "ss": "Swati", "st": "Southern Sotho", "su": "Sundanese",
    "sv": "Swedish", "sw": "Swahili", "ta": "Tamil", "te": "Telugu", "tg": "Tajik", "th": "Thai",
    "ti": "Tigrinya", "tk": "Turkmen", "tl": "Tagalog", "tn": "Tswana", "to": "Tongan", "tr": "Turkish",
    "ts": "Tsonga", "tt": "Tatar", "tw": "Twi", "ty": "Tahitian", "ug": "Uyghur", "uk": "Ukrainian",
    "ur": "Urdu", "uz": "Uzbek", "ve": "Venda", "vi": "Vietnamese", "vo": "Volapük", "wa": "Walloon",
    "wo": "Wolof", "xh": "Xhosa", "yi": "Yiddish", "yo": "Yoruba", "za": "Zhuang", "zh": "Chinese",
    "zu": "Zulu",
    # ISO 639-2/3 codes without a two-letter code, seen in multilingual benchmarks
    "ace": "Acehnese", "ast": "Asturian", "awa": "Awadhi", "ban": "Balinese", "bem": "Bemba",
    "bho": "Bhojpuri", "ceb": "Cebuano", "chr": "Cherokee", "ckb": "Central Kurdish", "crh": "Crimean Tatar",
    "dik": "Dinka", "dyu": "Dyula", "fil": "Filipino", "fon": "Fon", "fur": "Friulian", "gom": "Konkani",
    "haw": "Hawaiian", "hmn": "Hmong", "hne": "Chhattisgarhi", "ilo": "Ilocano", "kab": "Kabyle",
    "kam": "Kamba", "kbp": "Kabiyè", "kea": "Kabuverdianu", "kmb": "Kimbundu", "kmr": "Northern Kurdish",
    "lij": "Ligurian", "lmo": "Lombard", "ltg": "Latgalian", "lua": "Luba-Lulua", "luo": "Luo",
    "lus": "Mizo", "mag": "Magahi", "mai": "Maithili", "min": "Minangkabau", "mni": "Manipuri",
    "mos": "Mossi", "nso": "Northern Sotho", "nus": "Nuer", "pag": "Pangasinan", "pap": "Papiamento",
    "pcm": "Nigerian Pidgin", "prs": "Dari", "quy": "Ayacucho Quechua", "sat": "Santali", "scn": "Sicilian",
    "shn": "Shan", "szl": "Silesian", "taq": "Tamasheq", "tpi": "Tok Pisin", "tum": "Tumbuka",
    "tzm": "Central Atlas Tamazight", "umb": "Umbundu", "vec": "Venetian", "war": "Waray", "yue": "Cantonese",
    "zgh": "Standard Moroccan Tamazight", "arz": "Egyptian Arabic", "ary": "Moroccan Arabic",
    "apc": "Levantine Arabic", "acm": "Mesopotamian Arabic", "ars": "Najdi Arabic", "nds": "Low German",
    "gsw": "Swiss German", "sah": "Yakut", "hsb": "Upper Sorbian", "dsb": "Lower Sorbian",
    "wuu": "Wu Chinese", "nan": "Min Nan Chinese", "cmn": "Mandarin Chinese",
}

# ISO 639-2/3 codes of languages that also have a two-letter code.
_THREE_TO_TWO: dict[str, str] = {
    "afr": "af", "amh": "am", "ara": "ar", "asm": "as", "aze": "az", "bel": "be", "ben": "bn", "bod": "bo",
    "tib": "bo", "bos": "bs", "bul": "bg", "cat": "ca", "ces": "cs", "cze": "cs", "cym": "cy", "wel": "cy",
    "dan": "da", "deu": "de", "ger": "de", "ell": "el", "gre": "el", "eng": "en", "epo": "eo", "est": "et",
    "eus": "eu", "baq": "eu", "fas": "fa", "per": "fa", "pes": "fa", "fin": "fi", "fra": "fr", "fre": "fr",
    "gle": "ga", "glg": "gl", "guj": "gu", "hau": "ha", "heb": "he", "hin": "hi", "hrv": "hr", "hun": "hu",
    "hye": "hy", "arm": "hy", "ibo": "ig", "ind": "id", "isl": "is", "ice": "is", "ita": "it", "jav": "jv",
    "jpn": "ja", "kat": "ka", "geo": "ka", "kaz": "kk", "khm": "km", "kan": "kn", "kor": "ko", "kur": "ku",
    "kir": "ky", "lao": "lo", "lit": "lt", "lav": "lv", "mlg": "mg", "mri": "mi", "mao": "mi", "mkd": "mk",
    "mac": "mk", "mal": "ml", "mon": "mn", "khk": "mn", "mar": "mr", "msa": "ms", "may": "ms", "zsm": "ms",
    "mlt": "mt", "mya": "my", "bur": "my", "nep": "ne", "npi": "ne", "nld": "nl", "dut": "nl", "nob": "nb",
    "nno": "nn", "nor": "no", "nya": "ny", "oci": "oc", "orm": "om", "gaz": "om", "ori": "or", "ory": "or",
    "pan": "pa", "pol": "pl", "pus": "ps", "pbt": "ps", "por": "pt", "que": "qu", "ron": "ro", "rum": "ro",
    "rus": "ru", "kin": "rw", "san": "sa", "snd": "sd", "sin": "si", "slk": "sk", "slo": "sk", "slv": "sl",
    "smo": "sm", "sna": "sn", "som": "so", "sqi": "sq", "alb": "sq", "als": "sq", "srp": "sr", "sot": "st",
    "sun": "su", "swe": "sv", "swa": "sw", "swh": "sw", "tam": "ta", "tel": "te", "tgk": "tg", "tha": "th",
    "tir": "ti", "tuk": "tk", "tgl": "tl", "tsn": "tn", "tur": "tr", "tso": "ts", "tat": "tt", "uig": "ug",
    "ukr": "uk", "urd": "ur", "uzb": "uz", "uzn": "uz", "vie": "vi", "wol": "wo", "xho": "xh", "yid": "yi",
    "ydd": "yi", "yor": "yo", "zho": "zh", "chi": "zh", "zul": "zu", "lug": "lg", "lin": "ln", "ltz": "lb",
    "fao": "fo", "fry": "fy", "gla": "gd", "hat": "ht", "aka": "ak", "twi": "tw", "ewe": "ee", "ful": "ff",
    "fuv": "ff", "kik": "ki", "kon": "kg", "bam": "bm", "che": "ce", "bak": "ba", "grn": "gn", "aym": "ay",
    "ayr": "ay", "tah": "ty", "ton": "to", "fij": "fj", "lim": "li", "srd": "sc", "ssw": "ss", "ven": "ve",
}

SCRIPTS: dict[str, str] = {
    "Latn": "Latin", "Cyrl": "Cyrillic", "Arab": "Arabic", "Hans": "Simplified",
    "Hant": "Traditional", "Deva": "Devanagari", "Beng": "Bengali", "Grek": "Greek", "Hebr": "Hebrew",
    "Jpan": "Japanese", "Kore": "Korean", "Hang": "Hangul", "Thai": "Thai", "Ethi": "Ethiopic",
    "Geor": "Georgian", "Armn": "Armenian", "Taml": "Tamil", "Telu": "Telugu", "Knda": "Kannada",
    "Mlym": "Malayalam", "Gujr": "Gujarati", "Guru": "Gurmukhi", "Orya": "Odia", "Sinh": "Sinhala",
    "Khmr": "Khmer", "Laoo": "Lao", "Mymr": "Myanmar", "Tibt": "Tibetan", "Mong": "Mongolian",
    "Tfng": "Tifinagh", "Cher": "Cherokee", "Syrc": "Syriac", "Thaa": "Thaana", "Olck": "Ol Chiki",
    "Mtei": "Meetei Mayek", "Adlm": "Adlam", "Nkoo": "N'Ko", "Vaii": "Vai", "Cans": "Canadian Syllabics",
}

# ISO 3166-1 alpha-2, with the short names people use.
COUNTRIES: dict[str, str] = {
    "AD": "Andorra", "AE": "United Arab Emirates", "AF": "Afghanistan", "AG": "Antigua and Barbuda",
    "AI": "Anguilla", "AL": "Albania", "AM": "Armenia", "AO": "Angola", "AQ": "Antarctica", "AR": "Argentina",
    "AS": "American Samoa", "AT": "Austria", "AU": "Australia", "AW": "Aruba", "AX": "Åland Islands",
    "AZ": "Azerbaijan", "BA": "Bosnia and Herzegovina", "BB": "Barbados", "BD": "Bangladesh", "BE": "Belgium",
    "BF": "Burkina Faso", "BG": "Bulgaria", "BH": "Bahrain", "BI": "Burundi", "BJ": "Benin",
    "BL": "Saint Barthélemy", "BM": "Bermuda", "BN": "Brunei", "BO": "Bolivia", "BQ": "Caribbean Netherlands",
    "BR": "Brazil", "BS": "Bahamas", "BT": "Bhutan", "BW": "Botswana", "BY": "Belarus", "BZ": "Belize",
    "CA": "Canada", "CC": "Cocos (Keeling) Islands", "CD": "Democratic Republic of the Congo",
    "CF": "Central African Republic", "CG": "Republic of the Congo", "CH": "Switzerland", "CI": "Côte d'Ivoire",
    "CK": "Cook Islands", "CL": "Chile", "CM": "Cameroon", "CN": "China", "CO": "Colombia", "CR": "Costa Rica",
    "CU": "Cuba", "CV": "Cape Verde", "CW": "Curaçao", "CX": "Christmas Island", "CY": "Cyprus",
    "CZ": "Czechia", "DE": "Germany", "DJ": "Djibouti", "DK": "Denmark", "DM": "Dominica",
    "DO": "Dominican Republic", "DZ": "Algeria", "EC": "Ecuador", "EE": "Estonia", "EG": "Egypt",
    "EH": "Western Sahara", "ER": "Eritrea", "ES": "Spain", "ET": "Ethiopia", "FI": "Finland", "FJ": "Fiji",
    "FK": "Falkland Islands", "FM": "Micronesia", "FO": "Faroe Islands", "FR": "France", "GA": "Gabon",
    "GB": "United Kingdom", "GD": "Grenada", "GE": "Georgia", "GF": "French Guiana", "GG": "Guernsey",
    "GH": "Ghana", "GI": "Gibraltar", "GL": "Greenland", "GM": "Gambia", "GN": "Guinea", "GP": "Guadeloupe",
    "GQ": "Equatorial Guinea", "GR": "Greece", "GT": "Guatemala", "GU": "Guam", "GW": "Guinea-Bissau",
    "GY": "Guyana", "HK": "Hong Kong", "HN": "Honduras", "HR": "Croatia", "HT": "Haiti", "HU": "Hungary",
    "ID": "Indonesia", "IE": "Ireland", "IL": "Israel", "IM": "Isle of Man", "IN": "India", "IQ": "Iraq",
    "IR": "Iran", "IS": "Iceland", "IT": "Italy", "JE": "Jersey", "JM": "Jamaica", "JO": "Jordan",
    "JP": "Japan", "KE": "Kenya", "KG": "Kyrgyzstan", "KH": "Cambodia", "KI": "Kiribati", "KM": "Comoros",
    "KN": "Saint Kitts and Nevis", "KP": "North Korea", "KR": "South Korea", "KW": "Kuwait",
    "KY": "Cayman Islands", "KZ": "Kazakhstan", "LA": "Laos", "LB": "Lebanon", "LC": "Saint Lucia",
    "LI": "Liechtenstein", "LK": "Sri Lanka", "LR": "Liberia", "LS": "Lesotho", "LT": "Lithuania",
    "LU": "Luxembourg", "LV": "Latvia", "LY": "Libya", "MA": "Morocco", "MC": "Monaco", "MD": "Moldova",
    "ME": "Montenegro", "MF": "Saint Martin", "MG": "Madagascar", "MH": "Marshall Islands",
    "MK": "North Macedonia", "ML": "Mali", "MM": "Myanmar", "MN": "Mongolia", "MO": "Macao",
    "MP": "Northern Mariana Islands", "MQ": "Martinique", "MR": "Mauritania", "MS": "Montserrat",
    "MT": "Malta", "MU": "Mauritius", "MV": "Maldives", "MW": "Malawi", "MX": "Mexico", "MY": "Malaysia",
    "MZ": "Mozambique", "NA": "Namibia", "NC": "New Caledonia", "NE": "Niger", "NF": "Norfolk Island",
    "NG": "Nigeria", "NI": "Nicaragua", "NL": "Netherlands", "NO": "Norway", "NP": "Nepal", "NR": "Nauru",
    "NU": "Niue", "NZ": "New Zealand", "OM": "Oman", "PA": "Panama", "PE": "Peru", "PF": "French Polynesia",
    "PG": "Papua New Guinea", "PH": "Philippines", "PK": "Pakistan", "PL": "Poland",
    "PM": "Saint Pierre and Miquelon", "PN": "Pitcairn Islands", "PR": "Puerto Rico", "PS": "Palestine",
    "PT": "Portugal", "PW": "Palau", "PY": "Paraguay", "QA": "Qatar", "RE": "Réunion", "RO": "Romania",
    "RS": "Serbia", "RU": "Russia", "RW": "Rwanda", "SA": "Saudi Arabia", "SB": "Solomon Islands",
    "SC": "Seychelles", "SD": "Sudan", "SE": "Sweden", "SG": "Singapore", "SH": "Saint Helena",
    "SI": "Slovenia", "SK": "Slovakia", "SL": "Sierra Leone", "SM": "San Marino", "SN": "Senegal",
    "SO": "Somalia", "SR": "Suriname", "SS": "South Sudan", "ST": "São Tomé and Príncipe",
    "SV": "El Salvador", "SX": "Sint Maarten", "SY": "Syria", "SZ": "Eswatini", "TC": "Turks and Caicos Islands",
    "TD": "Chad", "TG": "Togo", "TH": "Thailand", "TJ": "Tajikistan", "TK": "Tokelau", "TL": "Timor-Leste",
    "TM": "Turkmenistan", "TN": "Tunisia", "TO": "Tonga", "TR": "Türkiye", "TT": "Trinidad and Tobago",
    "TV": "Tuvalu", "TW": "Taiwan", "TZ": "Tanzania", "UA": "Ukraine", "UG": "Uganda", "US": "United States",
    "UY": "Uruguay", "UZ": "Uzbekistan", "VA": "Vatican City", "VC": "Saint Vincent and the Grenadines",
    "VE": "Venezuela", "VG": "British Virgin Islands", "VI": "U.S. Virgin Islands", "VN": "Vietnam",
    "VU": "Vanuatu", "WF": "Wallis and Futuna", "WS": "Samoa", "XK": "Kosovo", "YE": "Yemen", "YT": "Mayotte",
    "ZA": "South Africa", "ZM": "Zambia", "ZW": "Zimbabwe", "419": "Latin America", "001": "the world",
    "150": "Europe",
}

# Names (English and a few endonyms) that data sets use instead of codes.
_NAME_ALIASES: dict[str, str] = {
    "farsi": "fa", "mandarin": "zh", "simplified chinese": "zh", "traditional chinese": "zh",
    "kiswahili": "sw", "castilian": "es", "flemish": "nl", "moldavian": "ro", "panjabi": "pa", "oriya": "or",
    "sinhalese": "si", "burmese": "my", "myanmar": "my", "greek": "el", "modern greek": "el", "norwegian": "no",
    "bokmal": "nb", "nynorsk": "nn", "haitian": "ht", "kirghiz": "ky", "pushto": "ps", "uighur": "ug",
    "gaelic": "gd", "slovene": "sl", "tagalog": "tl", "filipino": "fil", "pilipino": "fil",
    "deutsch": "de", "français": "fr", "francais": "fr", "español": "es", "espanol": "es", "italiano": "it",
    "português": "pt", "portugues": "pt", "русский": "ru", "日本語": "ja", "中文": "zh", "한국어": "ko",
    "हिन्दी": "hi", "हिंदी": "hi", "ไทย": "th", "العربية": "ar", "türkçe": "tr", "bahasa indonesia": "id",
    "tiếng việt": "vi", "polski": "pl", "nederlands": "nl", "українська": "uk", "svenska": "sv",
}


@dataclass(frozen=True)
class Locale:
    """A parsed language tag such as ``de_DE``, ``sr_Latn_RS`` or ``pt-BR``."""

    language: str
    script: str | None = None
    region: str | None = None

    @property
    def tag(self) -> str:
        return "_".join(p for p in (self.language, self.script, self.region) if p)


def parse_locale(tag: str) -> Locale:
    """Split a language tag into language, script and region; unknown parts are kept, never refused.

    ``de_DE`` -> (de, None, DE); ``sr_Latn_RS`` -> (sr, Latn, RS); ``zh-Hant`` -> (zh, Hant, None);
    ``fil_PH`` -> (fil, None, PH); ``es-419`` -> (es, None, 419).
    """
    parts = [p for p in re.split(r"[-_\s]+", tag.strip()) if p]
    if not parts:
        return Locale(language="")
    language = parts[0].lower()
    script = region = None
    for part in parts[1:]:
        if script is None and region is None and len(part) == 4 and part.isalpha():
            script = part.title()
        elif region is None and ((len(part) == 2 and part.isalpha()) or (len(part) == 3 and part.isdigit())):
            region = part.upper()
    return Locale(language=language, script=script, region=region)


def normalize_code(code: str) -> str:
    """Lower-case a language code and map ISO 639-2/3 codes to ISO 639-1 where one exists."""
    code = code.strip().lower()
    return _THREE_TO_TWO.get(code, code)


def is_language_code(token: str) -> bool:
    """Whether ``token`` (e.g. ``de``, ``deu``, ``sr_Latn``, ``pt-BR``) names a known language."""
    if not token:
        return False
    loc = parse_locale(token)
    if not re.fullmatch(r"[a-z]{2,3}", loc.language):
        return False
    if loc.language in LANGUAGES or loc.language in _THREE_TO_TWO:
        return True
    return _langcodes_name(loc.language) is not None


@lru_cache(maxsize=1024)
def _langcodes_name(code: str) -> str | None:
    try:
        import langcodes  # optional
    except ImportError:
        return None
    try:
        lang = langcodes.Language.get(code)
        if not lang.is_valid():
            return None
        name = lang.language_name()
    except Exception:  # noqa: BLE001 - langcodes raises several types for odd tags
        return None
    return name if name and name.lower() != code.lower() else None


def language_name(code: str) -> str:
    """English name of a language code (``de`` -> German, ``deu`` -> German); the code itself if unknown."""
    key = normalize_code(parse_locale(code).language or code)
    return LANGUAGES.get(key) or _langcodes_name(key) or code


def country_name(code: str | None) -> str | None:
    """English name of an ISO 3166-1 alpha-2 (or UN M.49) region code; the code itself if unknown."""
    if not code:
        return None
    return COUNTRIES.get(code.upper(), code)


def script_name(code: str | None) -> str | None:
    if not code:
        return None
    return SCRIPTS.get(code.title(), code)


def describe_language(tag: str) -> str:
    """A prompt-ready language name: ``sr_Latn_RS`` -> "Serbian (Latin script)", ``zh_TW`` -> "Chinese
    (Traditional)"; a region is not included (see :func:`country_name`)."""
    loc = parse_locale(tag)
    name = language_name(loc.language) if loc.language else tag
    script = loc.script
    if script is None and loc.language == "zh" and loc.region in {"TW", "HK", "MO"}:
        script = "Hant"
    if script in {"Hans", "Hant"}:
        return f"{name} ({script_name(script)})"
    if script:
        return f"{name} ({script_name(script)} script)"
    return name


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip().casefold()


@lru_cache(maxsize=1)
def _names_to_codes() -> dict[str, str]:
    table = {_fold(name): code for code, name in LANGUAGES.items() if len(code) == 2}
    for code, name in LANGUAGES.items():  # three-letter codes only where no two-letter one took the name
        table.setdefault(_fold(name), code)
    table.update({_fold(k): v for k, v in _NAME_ALIASES.items()})
    return table


def code_for_name(name: str) -> str:
    """Language code for a name such as ``english``, ``Hindi`` or ``Kiswahili``; codes pass through
    normalised; an unknown name is returned lower-cased (results still split by it)."""
    folded = _fold(name)
    table = _names_to_codes()
    if folded in table:
        return table[folded]
    if is_language_code(folded):
        return normalize_code(folded)
    return folded
